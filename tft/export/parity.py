"""Parity gate: every artifact's logits against PyTorch's, on real dev inputs plus edge shapes.

Runners are plain callables `batch (dict of int64 arrays) -> logits`, so PyTorch, ONNX Runtime and
TensorRT (through Polygraphy's TrtRunner) are compared by the same code.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tft.export.config import ExportError
from tft.metrics import compute_per_example
from tft.predictions import pad_batch
from tft.tasks import Kind, kind_of

from tft.export.options import THRESHOLDS  # noqa: F401 - the gate defaults live with the options


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
    # in the batching the server uses: dev rows in arrival order, mixed lengths, batch sizes 1..max
    serving_agreement: float | None = None
    metric_serving: float | None = None
    # fraction of dev rows whose answer alone (batch 1) equals their answer inside a serving batch
    batch_invariance: float | None = None
    # largest change of a row's score (its top probability, or its value for regression) between alone and in a
    # serving batch; None for NER, whose answers carry no score
    score_drift: float | None = None
    rows_per_s: float | None = None
    latency_ms_p50: float | None = None
    passed: bool = False
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def real_tokens(inputs: dict, row: int) -> np.ndarray:
    """The columns of one padded row that hold its tokens, whichever side it was padded on."""
    return inputs["attention_mask"][row].astype(bool)


def parity_batches(features: list[dict], names, max_batch: int, max_len: int, vocab_size: int,
                   cls_id: int, sep_id: int, batch_size: int = 32, pad_id: int = 0,
                   left: bool = False) -> list[tuple[str, dict, list]]:
    """(label, inputs, labels-or-None per row) for dev batches and synthetic edge shapes."""
    out = []

    def padded(rows):
        return pad_batch(rows, names, pad_id, left=left)

    batch_size = min(batch_size, max_batch)  # never beyond the profile that TensorRT was built for
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        out.append(("dev", padded(chunk), [f.get("labels") for f in chunk]))
    rng = np.random.default_rng(0)

    def synthetic(length):
        ids = [cls_id] + rng.integers(5, max(6, vocab_size), max(0, length - 2)).tolist() + [sep_id]
        ids = ids[:length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": [0] * len(ids)}

    out.append(("batch=1", padded(features[:1]), [None]))
    big = [features[i % len(features)] for i in range(max_batch)]
    out.append((f"batch={max_batch}", padded(big), [None] * max_batch))
    out.append(("length=1", padded([synthetic(1)]), [None]))
    longest = [synthetic(max_len), synthetic(max_len)][:max_batch]
    out.append((f"length={max_len}", padded(longest), [None] * len(longest)))
    uneven = [synthetic(max_len), synthetic(3), synthetic(2)][:max_batch]
    out.append(("heavy padding", padded(uneven), [None] * len(uneven)))
    return out


def serving_batches(features: list[dict], names, max_batch: int, seed: int = 0, pad_id: int = 0,
                    left: bool = False) -> list[tuple[list, dict]]:
    """(labels per row, inputs) for dev rows in a shuffled arrival order, cut into batches of random
    sizes 1..max_batch and padded to each batch's longest row: what Triton's dynamic batcher hands a
    model, where a row's neighbours and padding vary (unlike export's length-grouped batches)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features)).tolist()
    out, start = [], 0
    while start < len(order):
        size = int(rng.integers(1, max_batch + 1))
        rows = [features[i] for i in order[start:start + size]]
        out.append(([f.get("labels") for f in rows], pad_batch(rows, names, pad_id, left=left)))
        start += size
    return out


def row_answers(logits: np.ndarray, inputs: dict, kind: Kind) -> list:
    """One comparable answer per row, as the kind decides (per-token kinds: over the row's real tokens)."""
    if not kind.per_token:
        return kind.decisions(logits)
    return [kind.decisions(row[real_tokens(inputs, i)][None])[0] for i, row in enumerate(logits)]


def measure_serving(reference, candidate, serving, *, kind: Kind) -> dict:
    """Agreement with the reference and batch invariance in serving batches (answers, and how far scores move),
    plus the candidate's throughput there and its single-row latency."""
    ref_answers, got_answers, single_answers, latencies, rows, logits, gold = [], [], [], [], 0, [], []
    drift = 0.0
    elapsed = 0.0
    for row_labels, inputs in serving:
        ref = np.asarray(reference(inputs), dtype=np.float32)
        start = time.perf_counter()
        got = np.asarray(candidate(inputs), dtype=np.float32)
        elapsed += time.perf_counter() - start
        rows += len(got)
        ref_answers += row_answers(ref, inputs, kind)
        got_answers += row_answers(got, inputs, kind)
        for i in range(len(got)):
            columns = real_tokens(inputs, i)
            alone = {k: v[i:i + 1, columns] for k, v in inputs.items()}
            start = time.perf_counter()
            one = np.asarray(candidate(alone), dtype=np.float32)
            latencies.append(time.perf_counter() - start)
            single_answers += row_answers(one, alone, kind)
            if not kind.per_token:
                drift = max(drift, float(np.abs(kind.scores(one[0]) - kind.scores(got[i])).max()))
            logits.append(got[i, columns] if kind.per_token else got[i])
            gold.append(row_labels[i])
    same = lambda a, b: sum(x == y for x, y in zip(a, b)) / max(len(a), 1)  # noqa: E731
    return {"serving_agreement": same(ref_answers, got_answers), "batch_invariance": same(single_answers, got_answers),
            "rows_per_s": rows / elapsed if elapsed else None,
            "latency_ms_p50": float(np.median(latencies)) * 1000 if latencies else None,
            "score_drift": None if kind.per_token else drift, "logits": logits, "gold": gold}


def compare(reference, candidate, batches, *, artifact: str, precision: str, kind: "str | Kind", labels,
            main_metric: str, thresholds: dict, serving=None) -> ParityResult:
    kind = kind_of(kind)
    diffs_max, diffs_sum, count, agree, total = 0.0, 0.0, 0, 0, 0
    ref_dev, cand_dev, gold_dev = [], [], []
    for name, inputs, row_labels in batches:
        ref = np.asarray(reference(inputs), dtype=np.float32)
        got = np.asarray(candidate(inputs), dtype=np.float32)
        if ref.shape != got.shape:
            raise ShapeError(f"{artifact}: output shape {got.shape} != PyTorch {ref.shape} on the {name} batch")
        if kind.per_token:
            mask = inputs["attention_mask"].astype(bool)
            r, g = ref[mask], got[mask]
        else:
            r, g = ref, got
        d = np.abs(r - g)
        diffs_max = max(diffs_max, float(d.max()) if d.size else 0.0)
        diffs_sum += float(d.sum())
        count += d.size
        if labels:
            agree += sum(a == b for a, b in zip(kind.decisions(r), kind.decisions(g)))
            total += r.shape[0]
        if name == "dev" and all(x is not None for x in row_labels):
            for i, lab in enumerate(row_labels):
                columns = real_tokens(inputs, i)
                ref_dev.append(ref[i, columns] if kind.per_token else ref[i])
                cand_dev.append(got[i, columns] if kind.per_token else got[i])
                gold_dev.append(lab)
    result = ParityResult(artifact, precision, len(batches), diffs_max, diffs_sum / max(count, 1),
                          agree / total if total else 1.0, thresholds=thresholds)
    if gold_dev and kind.has_labels:
        result.metric = main_metric
        result.metric_pytorch = _metric(kind, labels, ref_dev, gold_dev, main_metric)
        result.metric_artifact = _metric(kind, labels, cand_dev, gold_dev, main_metric)
    if serving:
        measured = measure_serving(reference, candidate, serving, kind=kind)
        result.rows_per_s, result.latency_ms_p50 = measured["rows_per_s"], measured["latency_ms_p50"]
        result.score_drift = measured["score_drift"]
        if labels:
            result.serving_agreement = measured["serving_agreement"]
            result.batch_invariance = measured["batch_invariance"]
        if result.metric and all(g is not None for g in measured["gold"]):
            result.metric_serving = _metric(kind, labels, measured["logits"], measured["gold"], main_metric)
    _judge(result)
    return result


def _metric(kind, labels, logits, gold, main_metric) -> float:
    return compute_per_example(kind, labels, logits, gold)[main_metric]


def _judge(r: ParityResult) -> None:
    t = r.thresholds
    if "atol" in t and r.max_abs_diff > t["atol"]:
        raise AtolError(f"{r.artifact}: max |logit difference| {r.max_abs_diff:.3g} exceeds the {r.precision} "
                        f"tolerance {t['atol']:g} (mean {r.mean_abs_diff:.3g}, agreement {r.agreement:.2%})")
    if "min_agreement" in t:
        # the worse of export's length-grouped batches and the server's mixed batches
        for where, agreement in (("", r.agreement), (" in serving batches", r.serving_agreement)):
            if agreement is not None and agreement < t["min_agreement"]:
                raise AgreementError(f"{r.artifact}: predictions agree with PyTorch on {agreement:.2%}{where}, "
                                     f"below {t['min_agreement']:.0%}")
    if "min_batch_invariance" in t and r.batch_invariance is not None and r.batch_invariance < t["min_batch_invariance"]:
        raise AgreementError(f"{r.artifact}: {1 - r.batch_invariance:.2%} of dev answers change with the batch they are "
                             f"in (batch 1 vs serving batches); at most {1 - t['min_batch_invariance']:.0%} allowed")
    if "max_metric_drop" in t and r.metric_pytorch is not None:
        for where, metric in (("", r.metric_artifact), (" in serving batches", r.metric_serving)):
            drop = r.metric_pytorch - metric if metric is not None else 0.0
            if drop > t["max_metric_drop"]:
                raise AgreementError(f"{r.artifact}: dev {r.metric} {metric:.4f}{where} is {drop * 100:.2f} points "
                                     f"below PyTorch's {r.metric_pytorch:.4f} (limit {t['max_metric_drop'] * 100:.1f})")
    r.passed = True
