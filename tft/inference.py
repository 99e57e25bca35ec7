"""The torch-free inference core: what every stage after training shares to read inputs and give answers.

    task_of(manifest)            the task as it was trained (generic tasks keep the fields the user chose)
    read_inputs(path, task)      a file in the task's format, or .txt lines (pairs tab-separated) -> items
    items_from_examples(...)     read examples -> {id, text, [text_pair]} items, labels dropped
    TextSettings.of(manifest)    every tokenizer setting a manifest records (what the served tokenizer reads)
    answer_items(...)            items -> answers through any model's logits: the one answer path of
                                 `tft predict` (PyTorch and ONNX), `tft eval`, the parity gate and `tft verify`

It imports only the standard library, numpy and tft's own core (tasks, readers, predictions), so a gRPC
client (`tft infer`, `tft verify --url`) needs neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tft.data.readers import READERS, TokenExample, iter_json_examples, read_lines
from tft.errors import DataError
from tft.predictions import max_chars_for
from tft.tasks import Kind, Task, get_task, is_pair, kind_from

ORT_DEVICES = ("auto", "cpu", "cuda", "tensorrt")  # where ONNX Runtime answers: --device of predict, export, verify


def task_of(manifest: dict) -> Task:
    """The task as it was trained (generic tasks keep the fields the user chose)."""
    task = get_task(manifest["task"])
    return dataclasses.replace(task, kind=kind_from(manifest), text_field=manifest["text_field"],
                               text_pair_field=manifest["text_pair_field"],
                               label_field=manifest.get("label_field", task.label_field))


def read_inputs(path: str | Path, task: Task) -> list[dict]:
    """Inputs for prediction: the task's own file format, or plain text lines (`.txt`; pairs tab-separated)."""
    return list(iter_inputs(path, task))


def iter_inputs(path: str | Path, task: Task) -> Iterator[dict]:
    """`read_inputs` one item at a time, as the file is read (plain text lines and JSON lines: a client's memory
    stays flat whatever the file's size; other formats are read whole, as their readers check whole files)."""
    if str(path) == "-":  # stdin: plain text lines, answered as they arrive (a live pipe)
        import sys

        yield from text_lines(((n, line.rstrip("\r\n")) for n, line in enumerate(sys.stdin, 1)), task, "<stdin>")
        return
    path = Path(path)
    if path.suffix in (".txt", ".text") and task.reader not in ("columns",):
        yield from text_lines(read_lines(path), task, path)
        return
    if task.reader == "json":
        count = 0
        for example in iter_json_examples(path, task):
            count += 1
            yield from items_from_examples([example], task)
        if not count:
            raise DataError(path, "no examples to predict")
        return
    examples = READERS[task.reader](path, task, require_label=False).examples
    if not examples:
        raise DataError(path, "no examples to predict")
    yield from items_from_examples(examples, task)


def text_lines(lines, task: Task, where) -> Iterator[dict]:
    """Plain text lines -> items, one per non-blank line (pairs tab-separated), as they are read."""
    count = 0
    for number, line in lines:
        if not line.strip():
            continue
        count += 1
        if task.is_pair:
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataError(where, "expected two tab-separated texts for a sentence-pair task", number)
            yield {"id": f"line-{number}", "text": parts[0], "text_pair": parts[1]}
        else:
            yield {"id": f"line-{number}", "text": line}
    if not count:
        raise DataError(where, "no texts to predict")


def items_from_examples(examples: list, task: Task) -> list[dict]:
    """Read examples -> raw prediction inputs ({id, text, [text_pair]}), labels dropped."""
    items = []
    for ex in examples:
        if isinstance(ex, TokenExample):
            text = ex.text if ex.text is not None else task.word_joiner.join(ex.tokens)
            items.append({"id": ex.guid, "text": text})
        else:
            items.append({"id": ex.guid, "text": ex.text, **({"text_pair": ex.text_pair} if ex.text_pair else {})})
    return items


@dataclass(frozen=True)
class TextSettings:
    """How texts become model inputs, as the manifest (checkpoint or export) records it: the same settings the
    served tokenizer step reads from the export, so offline and served answers cut and join texts alike."""

    kind: Kind
    max_seq_length: int
    max_chars: int  # characters kept per text before tokenizing
    word_joiner: str
    pair: bool
    windows: bool = True  # per-token kinds: a text longer than the model reads is read in overlapping windows

    @classmethod
    def of(cls, manifest: dict) -> "TextSettings":
        nested = manifest.get("checkpoint_manifest", {})  # exports written before the top level recorded these

        def field(key, default=None):
            return manifest[key] if key in manifest else nested.get(key, default)

        kind = kind_from(manifest)
        max_len = int(manifest["max_seq_length"])
        return cls(kind, max_len, max_chars_for(max_len, field("max_chars")), field("word_joiner", " "),
                   is_pair(kind, field("text_pair_field")))


def answer_items(items: list[dict], settings: TextSettings, tokenizer, logits_of: Callable[[list[dict]], list],
                 labels) -> list[dict]:
    """Raw items ({text, [text_pair]}) -> answers ({label, score} or {entities}), in input order, through
    `logits_of(features) -> one array per feature` (PyTorch, ONNX Runtime, anything)."""
    from tft.answers import shape_of
    from tft.data.features import encode_for_inference

    features = encode_for_inference([i["text"] for i in items],
                                    [i.get("text_pair", "") for i in items] if settings.pair else None,
                                    tokenizer, settings.max_seq_length, settings.kind.per_token,
                                    settings.word_joiner, settings.max_chars, settings.windows)
    logits = _logits_of_windows(features, logits_of)
    shape = shape_of(settings.kind)
    out = []
    answers = shape.answers(logits, features, items, tuple(labels), settings.word_joiner)
    for item, feature, answer in zip(items, features, answers):
        # cut by --max-chars, or by the model's length (tokens past max_seq_length): the answer is about a prefix
        cut = feature.get("truncated") or any(len(item.get(k) or "") > settings.max_chars for k in ("text", "text_pair"))
        out.append({**item, **answer, **({"truncated": True} if cut else {})})  # the answer is about the prefix
    return out


def _logits_of_windows(features: list[dict], logits_of) -> list:
    """`logits_of` over every window of every feature: one array per feature, or, where any text was read in windows,
    one list of arrays (its windows in order) per feature."""
    if not any("windows" in feat for feat in features):
        return logits_of(features)
    # the runners read inputs by name; the first window is the feature without its list of the others
    flat = [window for feat in features
            for window in ({k: v for k, v in feat.items() if k != "windows"}, *feat.get("windows", ()))]
    logits = logits_of(flat)
    grouped, at = [], 0
    for feat in features:
        count = 1 + len(feat.get("windows", ()))
        grouped.append(list(logits[at:at + count]))
        at += count
    return grouped
