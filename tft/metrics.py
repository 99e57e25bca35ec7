"""The metrics tasks are judged by: accuracy/F1, Pearson/Spearman, entity-level F1 (seqeval).

Plain functions of arrays; which one judges a task is its kind's decision (`Kind.metrics` in tft/tasks.py), so this
module imports nothing of tft's.
"""

from __future__ import annotations

import numpy as np


def classification_metrics(preds: np.ndarray, gold: np.ndarray, num_labels: int) -> dict:
    from sklearn.metrics import f1_score

    average = "binary" if num_labels == 2 else "macro"
    return {"accuracy": float((preds == gold).mean()),
            "f1": float(f1_score(gold, preds, average=average, zero_division=0))}


def regression_metrics(preds: np.ndarray, gold: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr

    if len(gold) < 2 or np.std(preds) == 0 or np.std(gold) == 0:
        return {"pearson": 0.0, "spearmanr": 0.0}
    return {"pearson": float(pearsonr(preds, gold)[0]), "spearmanr": float(spearmanr(preds, gold)[0])}


def token_tag_sequences(pred_ids: np.ndarray, label_ids: np.ndarray, labels) -> tuple[list, list]:
    """Keep positions with a gold label (first sub-tokens); map ids to tags."""
    y_true, y_pred = [], []
    for p_row, g_row in zip(pred_ids, label_ids):
        keep = g_row >= 0  # negative gold ids (IGNORE_INDEX) are positions not scored
        y_true.append([labels[i] for i in g_row[keep]])
        y_pred.append([labels[i] for i in p_row[keep]])
    return y_true, y_pred


def ner_metrics(y_true: list[list[str]], y_pred: list[list[str]], report: bool = False) -> dict:
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    out = {"precision": float(precision_score(y_true, y_pred, zero_division=0)),
           "recall": float(recall_score(y_true, y_pred, zero_division=0)),
           "f1": float(f1_score(y_true, y_pred, zero_division=0))}
    if report:
        rep = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
        out["per_type"] = {k: {m: float(v) for m, v in d.items()} for k, d in rep.items()
                           if k not in ("micro avg", "macro avg", "weighted avg")}
    return out


def compute(kind, labels, logits: np.ndarray, label_ids: np.ndarray, report: bool = False) -> dict:
    """The kind's metrics (a `tft.tasks.Kind`) of logits against gold label ids."""
    return kind.metrics(logits, label_ids, labels, report)


def trainer_metrics(kind, labels):
    """A `compute_metrics` callable for the Hugging Face Trainer."""

    def fn(eval_pred):
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return compute(kind, labels, np.asarray(logits), np.asarray(label_ids))

    return fn


def compute_per_example(kind, labels, logits: list, gold: list, report: bool = False) -> dict:
    """`compute` over per-example outputs: NER logits and label rows are ragged, so pad them
    (gold padding -1, not scored) before scoring; other rows are stacked."""
    if not kind.per_token:
        return compute(kind, labels, np.stack(logits), np.asarray(gold), report=report)
    width = max(len(x) for x in logits)
    padded = np.zeros((len(logits), width, len(labels)), dtype=np.float32)
    gold_ids = np.full((len(logits), width), -1)
    for i, (x, y) in enumerate(zip(logits, gold)):
        padded[i, : len(x)] = x
        gold_ids[i, : len(y)] = y
    return compute(kind, labels, padded, gold_ids, report=report)
