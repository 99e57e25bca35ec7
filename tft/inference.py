"""The torch-free inference core: what every stage after training shares to read inputs and give answers.

    task_of(manifest)            the task as it was trained (generic tasks keep the fields the user chose)
    read_inputs(path, task)      a file in the task's format, or .txt lines (pairs tab-separated) -> items
    items_from_examples(...)     read examples -> {id, text, [text_pair]} items, labels dropped
    answers(...)                 model outputs -> {label, score} or {entities} per item

It imports only the standard library, numpy and tft's own core (tasks, readers, predictions), so a gRPC
client (`tft infer`, `tft verify --url`) needs neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tft import predictions
from tft.data.readers import READERS, TokenExample, read_lines
from tft.errors import DataError
from tft.tasks import Task, get_task


def task_of(manifest: dict) -> Task:
    """The task as it was trained (generic tasks keep the fields the user chose)."""
    task = get_task(manifest["task"])
    return dataclasses.replace(task, kind=manifest["kind"], text_field=manifest["text_field"],
                               text_pair_field=manifest["text_pair_field"],
                               label_field=manifest.get("label_field", task.label_field))


def read_inputs(path: str | Path, task: Task) -> list[dict]:
    """Inputs for prediction: the task's own file format, or plain text lines (`.txt`; pairs tab-separated)."""
    path = Path(path)
    if path.suffix in (".txt", ".text") and task.reader not in ("columns",):
        items = []
        for number, line in read_lines(path):
            if not line.strip():
                continue
            if task.is_pair:
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(path, "expected two tab-separated texts for a sentence-pair task", number)
                items.append({"id": f"line-{number}", "text": parts[0], "text_pair": parts[1]})
            else:
                items.append({"id": f"line-{number}", "text": line})
        return items
    examples = READERS[task.reader](path, task, require_label=False).examples
    if not examples:
        raise DataError(path, "no examples to predict")
    return items_from_examples(examples, task)


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


def answers(items: list[dict], logits: list[np.ndarray], features: list[dict], labels, token_task: bool,
            word_joiner: str) -> list[dict]:
    """Logits -> one output record per input, in input order."""
    if token_task:
        out = []
        for item, lg, feat in zip(items, logits, features):
            ents = predictions.entities(item["text"], lg.argmax(-1), feat["word_ids"], word_joiner, labels)
            out.append({**item, "entities": ents})
        return out
    return [{**item, **ans} for item, ans in zip(items, predictions.classify(np.stack(logits), labels))]
