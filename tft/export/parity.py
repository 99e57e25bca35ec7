"""Parity gate: every artifact's logits against PyTorch's, on real dev inputs plus edge shapes.

Runners are plain callables `batch (dict of int64 arrays) -> logits`, so PyTorch, ONNX Runtime and
TensorRT (through Polygraphy's TrtRunner) are compared by the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tft.export.config import ExportError
from tft.metrics import compute_per_example
from tft.tasks import REGRESSION

THRESHOLDS = {"fp32": {"atol": 1e-4}, "fp16": {"atol": 1e-2},
              "int8": {"min_agreement": 0.99, "max_metric_drop": 0.01}}


class ParityError(ExportError):
    """An artifact's outputs drift from PyTorch beyond its threshold."""


class AtolError(ParityError):
    pass


class AgreementError(ParityError):
    pass


class ShapeError(ParityError):
    pass


@dataclass
class ParityResult:
    artifact: str
    precision: str
    batches: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float
    metric: str | None = None
    metric_pytorch: float | None = None
    metric_artifact: float | None = None
    passed: bool = False
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def pad_batch(features: list[dict], names, pad_id: int = 0) -> dict[str, np.ndarray]:
    width = max(len(f["input_ids"]) for f in features)
    out = {}
    for name in names:
        fill = pad_id if name == "input_ids" else 0
        arr = np.full((len(features), width), fill, dtype=np.int64)
        for i, f in enumerate(features):
            arr[i, : len(f[name])] = f[name]
        out[name] = arr
    return out


def parity_batches(features: list[dict], names, max_batch: int, max_len: int, vocab_size: int,
                   cls_id: int, sep_id: int, batch_size: int = 32) -> list[tuple[str, dict, list]]:
    """(label, inputs, labels-or-None per row) for dev batches and synthetic edge shapes."""
    out = []
    batch_size = min(batch_size, max_batch)  # never beyond the profile that TensorRT was built for
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        out.append(("dev", pad_batch(chunk, names), [f.get("labels") for f in chunk]))
    rng = np.random.default_rng(0)

    def synthetic(length):
        ids = [cls_id] + rng.integers(5, max(6, vocab_size), max(0, length - 2)).tolist() + [sep_id]
        ids = ids[:length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": [0] * len(ids)}

    out.append(("batch=1", pad_batch(features[:1], names), [None]))
    big = [features[i % len(features)] for i in range(max_batch)]
    out.append((f"batch={max_batch}", pad_batch(big, names), [None] * max_batch))
    out.append(("length=1", pad_batch([synthetic(1)], names), [None]))
    longest = [synthetic(max_len), synthetic(max_len)][:max_batch]
    out.append((f"length={max_len}", pad_batch(longest, names), [None] * len(longest)))
    padded = [synthetic(max_len), synthetic(3), synthetic(2)][:max_batch]
    out.append(("heavy padding", pad_batch(padded, names), [None] * len(padded)))
    return out


def compare(reference, candidate, batches, *, artifact: str, precision: str, token_task: bool, kind: str,
            labels, main_metric: str, thresholds: dict) -> ParityResult:
    diffs_max, diffs_sum, count, agree, total = 0.0, 0.0, 0, 0, 0
    ref_dev, cand_dev, gold_dev = [], [], []
    for name, inputs, row_labels in batches:
        ref = np.asarray(reference(inputs), dtype=np.float32)
        got = np.asarray(candidate(inputs), dtype=np.float32)
        if ref.shape != got.shape:
            raise ShapeError(f"{artifact}: output shape {got.shape} != PyTorch {ref.shape} on the {name} batch")
        if token_task:
            mask = inputs["attention_mask"].astype(bool)
            r, g = ref[mask], got[mask]
        else:
            r, g = ref, got
        d = np.abs(r - g)
        diffs_max = max(diffs_max, float(d.max()) if d.size else 0.0)
        diffs_sum += float(d.sum())
        count += d.size
        if labels:
            agree += int((r.argmax(-1) == g.argmax(-1)).sum())
            total += r.shape[0]
        if name == "dev" and all(x is not None for x in row_labels):
            for i, lab in enumerate(row_labels):
                width = len(lab) if token_task else None
                ref_dev.append(ref[i, :width] if token_task else ref[i])
                cand_dev.append(got[i, :width] if token_task else got[i])
                gold_dev.append(lab)
    result = ParityResult(artifact, precision, len(batches), diffs_max, diffs_sum / max(count, 1),
                          agree / total if total else 1.0, thresholds=thresholds)
    if gold_dev and kind != REGRESSION:
        result.metric = main_metric
        result.metric_pytorch = _metric(kind, labels, ref_dev, gold_dev, main_metric)
        result.metric_artifact = _metric(kind, labels, cand_dev, gold_dev, main_metric)
    _judge(result)
    return result


def _metric(kind, labels, logits, gold, main_metric) -> float:
    return compute_per_example(kind, labels, logits, gold)[main_metric]


def _judge(r: ParityResult) -> None:
    t = r.thresholds
    if "atol" in t and r.max_abs_diff > t["atol"]:
        raise AtolError(f"{r.artifact}: max |logit difference| {r.max_abs_diff:.3g} exceeds the {r.precision} "
                        f"tolerance {t['atol']:g} (mean {r.mean_abs_diff:.3g}, agreement {r.agreement:.2%})")
    if "min_agreement" in t and r.agreement < t["min_agreement"]:
        raise AgreementError(f"{r.artifact}: predictions agree with PyTorch on {r.agreement:.2%}, "
                             f"below {t['min_agreement']:.0%}")
    if "max_metric_drop" in t and r.metric_pytorch is not None:
        drop = r.metric_pytorch - r.metric_artifact
        if drop > t["max_metric_drop"]:
            raise AgreementError(f"{r.artifact}: dev {r.metric} {r.metric_artifact:.4f} is {drop * 100:.2f} points "
                                 f"below PyTorch's {r.metric_pytorch:.4f} (limit {t['max_metric_drop'] * 100:.1f})")
    r.passed = True
