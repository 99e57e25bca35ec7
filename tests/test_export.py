"""`tft export`: ONNX fp32 (both exporters), optimized, int8, fp16, each parity-checked; the TensorRT
boundary on a machine without a GPU; the manifest schema; `tft predict --onnx`."""

from __future__ import annotations

import json

import jsonschema
from click.testing import CliRunner

from helpers import run_tft

MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["format", "task", "kind", "labels", "inputs", "outputs", "max_batch", "max_seq_length",
                 "artifacts", "tokenizer", "checkpoint_manifest", "versions"],
    "properties": {
        "format": {"const": "tft.export/1"},
        "kind": {"enum": ["sequence_classification", "pair_classification", "regression", "token_classification"]},
        "labels": {"type": "array", "items": {"type": "string"}},
        "inputs": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["name", "dtype", "shape"],
            "properties": {"name": {"enum": ["input_ids", "attention_mask", "token_type_ids"]},
                           "dtype": {"const": "int64"}, "shape": {"const": ["batch", "sequence"]}}}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "dtype", "shape"],
                                               "properties": {"name": {"const": "logits"}}}},
        "max_batch": {"type": "integer", "minimum": 1},
        "max_seq_length": {"type": "integer", "minimum": 1},
        "artifacts": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "file", "precision", "runtime", "sha256", "parity"],
            "properties": {"precision": {"enum": ["fp32", "fp16", "int8"]},
                           "runtime": {"enum": ["onnxruntime", "tensorrt"]},
                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "parity": {"type": "object", "required": ["max_abs_diff", "mean_abs_diff", "agreement", "passed"],
                                      "properties": {"passed": {"const": True}}}}}},
    },
}


def manifest_of(out):
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_pair_export_all_precisions_pass_parity(pair_export):
    m = manifest_of(pair_export)
    jsonschema.validate(m, MANIFEST_SCHEMA)
    arts = {a["name"]: a for a in m["artifacts"]}
    assert set(arts) == {"fp32", "fp32-optimized", "int8", "int8-static", "fp16"}
    assert arts["fp32"]["parity"]["max_abs_diff"] < 1e-4
    assert arts["fp16"]["parity"]["max_abs_diff"] < 1e-2
    assert arts["int8"]["parity"]["agreement"] >= 0.99
    assert abs(arts["int8"]["parity"]["metric_pytorch"] - arts["int8"]["parity"]["metric_artifact"]) <= 0.01
    assert arts["fp32"]["parity"]["batches"] >= 5 + 128 // 32  # dev batches + the edge shapes
    # the ORT optimizer fused the BERT graph
    assert {"Attention", "SkipLayerNormalization"} <= set(arts["fp32-optimized"]["fused_operators"])
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert (pair_export / "int8").exists() is False and (pair_export / "model.int8.onnx").stat().st_size < \
        (pair_export / "model.onnx").stat().st_size / 2
    for name in ("tokenizer.json", "config.json", "tft.json"):
        assert (pair_export / name).exists()


def test_every_artifact_is_measured_in_serving_batches(pair_export):
    import onnx

    arts = {a["name"]: a["parity"] for a in manifest_of(pair_export)["artifacts"]}
    for name, parity in arts.items():
        assert parity["rows_per_s"] > 0 and parity["latency_ms_p50"] > 0, name
        assert parity["serving_agreement"] >= 0.99 and parity["metric_serving"] is not None, name
    assert arts["fp32"]["batch_invariance"] == 1.0  # a row's fp32 answer never depends on its neighbours
    # static Q/DQ: scales fixed by calibration on 256 training texts, the weight MatMuls quantized, the
    # classifier and attention scores left in fp32
    static = next(a for a in manifest_of(pair_export)["artifacts"] if a["name"] == "int8-static")
    assert static["calibration_samples"] == 256 and arts["int8-static"]["batch_invariance"] >= 0.99
    graph = onnx.load(str(pair_export / "model.int8-static.onnx")).graph
    dequantized = {d.output[0] for d in graph.node if d.op_type == "DequantizeLinear"}
    fed_by_int8 = {n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & dequantized}
    assert any("/intermediate/dense/" in n for n in fed_by_int8)  # the feed-forward weights are int8
    assert not any("classifier" in n or "/attention/self/MatMul" in n for n in fed_by_int8), fed_by_int8


def test_onnx_checker_and_dynamic_axes(pair_export):
    import onnx

    model = onnx.load(str(pair_export / "model.onnx"))
    onnx.checker.check_model(model)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    assert any(op.op_type == "LayerNormalization" for op in model.graph.node)  # opset 17 keeps it whole


def test_predict_onnx_matches_pytorch_predictions(pair_export, trained_pair, afqmc_sample, tmp_path):
    a, b = tmp_path / "torch.jsonl", tmp_path / "onnx.jsonl"
    assert run_tft("predict", "--checkpoint", trained_pair / "best", afqmc_sample / "test.json", "-o", a).returncode == 0
    proc = run_tft("predict", "--onnx", pair_export, afqmc_sample / "test.json", "-o", b)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ra = [json.loads(x) for x in a.read_text().splitlines()]
    rb = [json.loads(x) for x in b.read_text().splitlines()]
    assert [r["label"] for r in ra] == [r["label"] for r in rb]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(ra, rb)) < 1e-5


def test_trt_without_gpu_fails_in_one_line_and_keeps_onnx(trained_pair, tmp_path):
    out = tmp_path / "exp"
    proc = run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", out, "--trt", "--parity-samples", 32)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --trt needs an NVIDIA GPU with CUDA (none is visible)")
    assert last.endswith("the ONNX artifacts are complete")
    m = manifest_of(out)
    # --trt also writes the fp16 graph: TensorRT 11 builds its fp16 engine from it (strong typing)
    assert {a["name"] for a in m["artifacts"]} == {"fp32", "fp32-optimized", "fp16"}
    assert (out / "model.onnx").exists() and not (out / "model.plan").exists()


def test_ner_export_dynamo_exporter_and_entities_via_onnx(trained_ner, tmp_path):
    out = tmp_path / "ner"
    proc = run_tft("export", "--checkpoint", trained_ner / "best", "--output-dir", out, "--exporter", "dynamo",
                   "--int8", "--fp16", "--parity-samples", 64, "--max-batch", 8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest_of(out)
    jsonschema.validate(m, MANIFEST_SCHEMA)
    assert m["outputs"][0]["shape"] == ["batch", "sequence", len(m["labels"])]
    assert {a["name"] for a in m["artifacts"]} >= {"fp32", "int8", "fp16"}
    src = tmp_path / "in.txt"
    src.write_text("据腾讯消息，李娜将前往上海\n", encoding="utf-8")
    proc = run_tft("predict", "--onnx", out, src, "-o", tmp_path / "o.jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ents = json.loads((tmp_path / "o.jsonl").read_text(encoding="utf-8"))["entities"]
    assert {"type": "address", "text": "上海", "start": 11, "end": 13} in ents


def test_weights_perturbed_after_export_fail_parity_and_leave_nothing(trained_pair, tmp_path, monkeypatch):
    import torch

    from tft.cli import cli
    from tft.export import onnx_export

    real_export = onnx_export.export_onnx

    def export_then_perturb(model, cfg, path, exporter="torchscript"):
        result = real_export(model, cfg, path, exporter)
        with torch.no_grad():
            model.classifier.weight.add_(0.5)
        return result

    monkeypatch.setattr(onnx_export, "export_onnx", export_then_perturb)
    out = tmp_path / "exp"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(trained_pair / "best"), "--output-dir", str(out),
                                      "--parity-samples", "32"])
    assert result.exit_code == 1
    assert "fp32: max |logit difference|" in result.output and "exceeds the fp32 tolerance 0.0001" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]  # no temp dir left behind


def test_export_of_a_non_checkpoint_is_one_line_error(tmp_path):
    proc = run_tft("export", "--checkpoint", tmp_path)
    assert proc.returncode == 1 and "tft.json: not found" in proc.stderr and "Traceback" not in proc.stderr
