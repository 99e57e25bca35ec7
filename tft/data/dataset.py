"""Load a task's splits: locate (or download) the files, read them, resolve and check labels."""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tft.data.readers import READERS, TokenExample
from tft.errors import DataError, TaskError
from tft.tasks import SPLITS, Kind, Task, tags_for

log = logging.getLogger("tft")


@dataclass
class Split:
    name: str
    path: Path
    examples: list
    warnings: Counter = field(default_factory=Counter)

    @property
    def labeled(self) -> bool:
        return bool(self.examples) and _gold(self.examples[0]) is not None

    @functools.cached_property
    def sha256(self) -> str:
        """The file's sha256, read once: the feature cache's key and a resumed run's check both use it."""
        from tft.fsutil import file_sha256

        return file_sha256(self.path)


@dataclass
class Dataset:
    task: Task
    data_dir: Path
    labels: tuple[str, ...]  # class labels, or BIO tags for NER ("O" first); () for regression
    splits: dict[str, Split]

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


def _gold(ex):
    return ex.tags if isinstance(ex, TokenExample) else ex.label


def _natural_key(label: str):
    return (0, int(label), "") if re.fullmatch(r"-?\d+", label) else (1, 0, label)


def resolve_data_dir(task: Task, data_dir: str | Path | None) -> Path:
    """The user's folder, or the task's public archive downloaded into the cache."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(path, "data directory not found")
        return path
    if task.archive is None:
        raise TaskError(f"task '{task.name}' has no public download; --data-dir is required")
    from tft.data.download import fetch_archive

    return fetch_archive(task.name, task.archive)


def read_split(task: Task, data_dir: Path, split: str) -> Split:
    if split not in SPLITS:
        raise TaskError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    path = Path(data_dir) / task.files[split]
    if not path.exists():
        raise DataError(path, f"file not found (task '{task.name}' expects {', '.join(task.files.values())} in its data directory)")
    result = READERS[task.reader](path, task, require_label=split != "test")
    if not result.examples:
        raise DataError(path, f"no examples in the {split} split")
    return Split(split, path, result.examples, result.warnings)


def labels_from_train(task: Task, train: Split | None) -> tuple[str, ...]:
    """The task's fixed label list, or one read from the training examples."""
    if not task.kind.has_labels:
        return ()
    if task.kind.per_token:
        if task.entity_types is not None:
            return tags_for(task.entity_types)
        if train is None:
            raise TaskError(f"task '{task.name}' reads its entity types from the train split; load it too")
        types = sorted({t[2:] for ex in train.examples for t in (ex.tags or []) if t != "O"})
        return tags_for(types)
    if task.labels is not None:
        return task.labels
    if train is None:
        raise TaskError(f"task '{task.name}' reads its labels from the train split; load it too")
    return tuple(sorted({name for ex in train.examples for name in task.kind.label_names(ex.label)}, key=_natural_key))


def check_labels(split: Split, labels: tuple[str, ...], kind: Kind) -> None:
    """Every gold label must be one the model can predict: fail on the first unknown one."""
    if not labels:
        return
    known = set(labels)
    for ex in split.examples:
        gold = _gold(ex)
        if gold is None:
            continue
        if isinstance(ex, TokenExample):
            for i, tag in enumerate(gold):
                if tag not in known:
                    where = ex.line + i if split.path.suffix != ".json" else ex.line
                    types = sorted({t[2:] for t in labels if t != "O"})
                    raise DataError(split.path, f"unknown entity type in tag {tag!r}; expected one of {', '.join(types)}", where)
        else:
            for name in kind.label_names(gold):
                if name not in known:
                    shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
                    raise DataError(split.path, f"unknown label {name!r}; expected one of {shown}", ex.line)


def _dataset_warnings(split: Split, labels: tuple[str, ...], kind: Kind) -> None:
    def key(ex):
        if isinstance(ex, TokenExample):
            return tuple(ex.tokens), tuple(ex.tags or ())
        return ex.text, ex.text_pair, ex.label

    dupes = sum(n - 1 for n in Counter(key(ex) for ex in split.examples).values() if n > 1)
    if dupes:
        split.warnings["duplicate examples"] += dupes
    if split.name == "dev" and labels and split.labeled and not isinstance(split.examples[0], TokenExample):
        missing = set(labels) - {name for ex in split.examples for name in kind.label_names(ex.label)}
        for label in sorted(missing, key=_natural_key):
            split.warnings[f"label {label!r} never occurs in dev"] += 1


def load_dataset(
    task: Task,
    data_dir: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "dev"),
    labels: tuple[str, ...] | None = None,
) -> Dataset:
    """Read the requested splits of a task, with labels resolved and checked.

    `labels` pins the label list (e.g. from a trained checkpoint); otherwise the task's own list
    is used, or one read from the train split.
    """
    root = resolve_data_dir(task, data_dir)
    loaded = {name: read_split(task, root, name) for name in splits}
    if labels is None:
        train = loaded.get("train")
        if train is None and (task.labels is None and task.entity_types is None) and task.kind.has_labels:
            train = read_split(task, root, "train")
        labels = labels_from_train(task, train)
    labels = tuple(labels)
    for split in loaded.values():
        check_labels(split, labels, task.kind)
        _dataset_warnings(split, labels, task.kind)
        for message, count in split.warnings.items():
            log.warning("%s: %d %s", split.path, count, message)
    return Dataset(task, root, labels, loaded)
