"""Batch invariance and serving-batch parity (export's gate), and `--artifact auto` (which artifact a
build serves): pure functions on synthetic runners and manifests, no model and no server."""

from __future__ import annotations

import numpy as np
import pytest

from tft.export.parity import AgreementError, THRESHOLDS, compare, measure_serving, serving_batches
from tft.errors import TftError
from tft.serve.artifacts import AUTO_MIN_BATCH_INVARIANCE, choose_artifact
from tft.tasks import kind_of


def features(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(2, 30))
        ids = rng.integers(5, 100, length).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": int(ids[0] % 2)})
    return out


NAMES = ("input_ids", "attention_mask")


def invariant(batch):
    """Logits from each row's own tokens only (what an fp32 model does)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    mean = (ids * mask).sum(-1) / mask.sum(-1)
    return np.stack([mean - 50, 50 - mean], -1).astype(np.float32)


def batch_dependent(batch):
    """Like dynamic int8: the scale follows the batch's largest value, so near-ties flip with the batch."""
    logits = invariant(batch)
    scale = max(float(np.abs(logits).max()) / 4, 1e-3)
    return np.round(logits / scale) * scale + 0.01 * (len(logits) % 3 - 1)


def test_serving_batches_cover_each_row_once_in_mixed_sizes_and_lengths():
    feats = features(200)
    batches = serving_batches(feats, NAMES, max_batch=16)
    sizes = [len(b["input_ids"]) for _, b in batches]
    assert sum(sizes) == 200 and max(sizes) <= 16 and min(sizes) >= 1 and len(set(sizes)) > 5
    rows = sorted(tuple(r[m.astype(bool)]) for _, b in batches for r, m in zip(b["input_ids"], b["attention_mask"]))
    assert rows == sorted(tuple(f["input_ids"]) for f in feats)
    # rows of different lengths share batches (unlike export's length-grouped batches)
    assert any(len(set(b["attention_mask"].sum(-1))) > 1 for _, b in batches)
    assert serving_batches(feats, NAMES, 16)[0][1]["input_ids"].tolist() == batches[0][1]["input_ids"].tolist()


def test_batch_invariance_is_one_for_a_row_wise_model_and_below_for_a_batch_dependent_one():
    serving = serving_batches(features(300), NAMES, max_batch=32)
    same = measure_serving(invariant, invariant, serving, kind=kind_of("pair_classification"))
    assert same["batch_invariance"] == 1.0 and same["serving_agreement"] == 1.0
    assert same["rows_per_s"] > 0 and same["latency_ms_p50"] > 0 and len(same["gold"]) == 300
    drift = measure_serving(invariant, batch_dependent, serving, kind=kind_of("pair_classification"))
    assert 0.5 < drift["batch_invariance"] < 1.0 and drift["serving_agreement"] < 1.0
    # and how far scores move: nothing for a row-wise model, something for one that depends on its batch
    assert same["score_drift"] == 0.0 and drift["score_drift"] > 0.01


def test_the_int8_gate_judges_serving_batches_and_optionally_invariance():
    feats = features(300)
    grouped = [("dev", {k: np.asarray([f[k] for f in feats[i:i + 1]]) for k in NAMES}, [feats[i]["labels"]])
               for i in range(0, 300)]
    serving = serving_batches(feats, NAMES, max_batch=32)
    common = dict(artifact="int8", precision="int8", kind="pair_classification", labels=("0", "1"),
                  main_metric="accuracy")
    # alone (batch 1) the two agree fully; only in serving batches do answers drift
    ok = compare(invariant, batch_dependent, grouped, thresholds={}, **common)
    assert ok.agreement == 1.0 and ok.passed
    with pytest.raises(AgreementError, match="in serving batches"):
        compare(invariant, batch_dependent, grouped, thresholds=THRESHOLDS["int8"], serving=serving, **common)
    with pytest.raises(AgreementError, match="change with the batch they are in"):
        compare(invariant, batch_dependent, grouped, serving=serving, **common,
                thresholds={"min_batch_invariance": 0.999})
    fine = compare(invariant, invariant, grouped, serving=serving, thresholds={**THRESHOLDS["int8"],
                   "min_batch_invariance": 1.0}, **common)
    assert fine.passed and fine.batch_invariance == 1.0 and fine.metric_serving == fine.metric_pytorch


def artifact(name, precision, rows_per_s, invariance=1.0, passed=True, runtime="onnxruntime", drift=None):
    return {"name": name, "file": f"model.{name}.onnx", "precision": precision, "runtime": runtime,
            "parity": {"passed": passed, "rows_per_s": rows_per_s, "batch_invariance": invariance,
                       "latency_ms_p50": 1.0, "score_drift": drift}}


DYNAMIC = ("dynamic int8 computes its activation scales per batch, so a row's scores follow its neighbours; serve it "
           "with --artifact int8 where verify's int8 rule is enough")
MANIFEST = {"artifacts": [
    artifact("fp32", "fp32", 100.0), artifact("fp32-optimized", "fp32", 120.0),
    artifact("int8", "int8", 300.0, invariance=0.978), artifact("int8-static", "int8", 190.0),
    artifact("fp16", "fp16", 400.0), artifact("tensorrt-fp16", "fp16", 900.0, runtime="tensorrt")]}


@pytest.mark.parametrize("manifest, runtime, device, expected, skipped", [
    # the fastest batch-invariant CPU artifact; dynamic int8 is faster but its answers follow the batch
    (MANIFEST, "onnxruntime", "cpu", "int8-static", {"int8": "answers change with the batch (2.20% of dev)",
                                                     "fp16": "fp16 is not fast on the cpu",
                                                     "tensorrt-fp16": "runs on tensorrt"}),
    (MANIFEST, "onnxruntime", "gpu", "fp16", {"int8": "int8 is not fast on the gpu"}),
    (MANIFEST, "tensorrt", "gpu", "tensorrt-fp16", {"fp32": "runs on onnxruntime"}),
    # dynamic int8 is never taken, even where export's sampled batches found it invariant (the server forms other
    # batches: a tiny ConvBERT's was served 0.016 from its own file); one that changes 0.5% of answers says so
    ({"artifacts": [artifact("fp32", "fp32", 100.0), artifact("int8", "int8", 300.0, invariance=1.0)]},
     "onnxruntime", "cpu", "fp32", {"int8": DYNAMIC}),
    ({"artifacts": [artifact("fp32", "fp32", 100.0), artifact("int8", "int8", 300.0, invariance=0.995)]},
     "onnxruntime", "cpu", "fp32", {"int8": "answers change with the batch (0.50% of dev)"}),
    # every answer unchanged, but scores moving more than verify allows the same file (0.038 > 0.01, as a DeBERTa
    # and the demo's model on an AVX2 EPYC showed): not served, or the pipeline would fail its own verification
    ({"artifacts": [artifact("fp32", "fp32", 100.0, drift=0.0), artifact("int8", "int8", 300.0, drift=0.038)]},
     "onnxruntime", "cpu", "fp32", {"int8": "scores move with the batch by up to 0.038 (verify allows 0.01)"}),
    ({"artifacts": [artifact("fp32", "fp32", 100.0, drift=0.0), artifact("int8", "int8", 300.0, drift=0.004)]},
     "onnxruntime", "cpu", "fp32", {"int8": DYNAMIC}),
    # static Q/DQ scales, fixed by calibration, are taken when invariant and faster
    ({"artifacts": [artifact("fp32", "fp32", 100.0, drift=0.0),
                    {**artifact("int8-static", "int8", 200.0, drift=0.0), "activation_scales": "static"}]},
     "onnxruntime", "cpu", "int8-static", {}),
    # exports written before speed was measured: the fp32 graph, as before
    ({"artifacts": [artifact("fp32", "fp32", None), artifact("int8", "int8", None)]}, "onnxruntime", "cpu", "fp32",
     {"int8": "no speed measured (exported before tft measured it)"}),
])
def test_auto_serves_the_fastest_passing_batch_invariant_artifact(manifest, runtime, device, expected, skipped):
    chosen, considered = choose_artifact(manifest, runtime, device)
    assert chosen["name"] == expected
    assert [c["name"] for c in considered if c["chosen"]] == [expected]
    reasons = {c["name"]: c.get("skipped") for c in considered}
    for name, reason in skipped.items():
        assert reasons[name] == reason
    assert AUTO_MIN_BATCH_INVARIANCE == 1.0


def test_auto_without_an_fp32_graph_or_candidate_says_so():
    with pytest.raises(TftError, match="no fp32 ONNX artifact"):
        choose_artifact({"artifacts": [artifact("int8", "int8", 10.0, passed=False)]}, "onnxruntime", "cpu")


def test_auto_for_a_gpu_never_ranks_by_speeds_measured_on_the_cpu():
    """An export made on a CPU host measures its artifacts there: the fused graph's CPU speed says nothing of the
    serving GPU. Ranked by speed only where a GPU provider measured them; else by precision (fp16, then the plain
    graph)."""
    def on(provider, art):
        return {**art, "measured_with": provider}

    cpu = [on("CPUExecutionProvider", a) for a in (artifact("fp32", "fp32", 100.0),
                                                    artifact("fp32-optimized", "fp32", 300.0),
                                                    artifact("fp16", "fp16", 50.0))]
    chosen, considered = choose_artifact({"artifacts": cpu}, "onnxruntime", "gpu")
    assert chosen["name"] == "fp16"
    assert next(c for c in considered if c["chosen"])["ranked"].startswith("by precision: its speed was measured")
    no_fp16 = {"artifacts": cpu[:2]}
    assert choose_artifact(no_fp16, "onnxruntime", "gpu")[0]["name"] == "fp32"
    gpu = {"artifacts": [on("CUDAExecutionProvider", a) for a in cpu]}
    assert choose_artifact(gpu, "onnxruntime", "gpu")[0]["name"] == "fp32-optimized"  # measured there: by speed
    assert choose_artifact({"artifacts": cpu}, "onnxruntime", "cpu")[0]["name"] == "fp32-optimized"
