"""The serving stage's rooms, each tested on its own in milliseconds: configs rendered from a plain manifest dict,
typed options, answer shapes, the transactional build and its records on a tiny export (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

MANIFEST = {"format": "tft.export/1", "task": "afqmc", "kind": "pair_classification", "labels": ["0", "1"],
            "text_field": "sentence1", "text_pair_field": "sentence2", "label_field": "label", "word_joiner": " ",
            "max_chars": None, "pad_token_id": 0, "max_batch": 16, "max_seq_length": 64,
            "inputs": [{"name": "input_ids"}, {"name": "attention_mask"}], "outputs": [], "artifacts": [],
            "checkpoint_manifest": {}}
NER = {**MANIFEST, "task": "cluener", "kind": "token_classification", "labels": ["O", "B-name", "I-name"],
       "text_pair_field": None, "word_joiner": ""}


@pytest.mark.parametrize("backend, device, platform", [("python", "cpu", ""), ("onnxruntime", "cpu", "onnxruntime_onnx"),
                                                       ("onnxruntime", "gpu", "onnxruntime_onnx"),
                                                       ("tensorrt", None, "tensorrt_plan")])
def test_every_step_config_renders_from_a_manifest_dict(backend, device, platform):
    from tritonclient.grpc import model_config_pb2 as mc

    from tft.serve.layout import Layout, parse_pbtxt, to_pbtxt
    from tft.serve.options import BuildOptions

    layout = Layout(MANIFEST, BuildOptions(name="m", backend=backend, device=device, max_batch=8, threads=2))
    model = parse_pbtxt(to_pbtxt(layout.model_config()))
    assert model.platform == platform and model.max_batch_size == 8
    assert (model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU) == (backend == "tensorrt" or device == "gpu")
    assert [i.name for i in model.input] == ["input_ids", "attention_mask"]
    assert all(i.allow_ragged_batch for i in model.input) == (backend == "python")
    threads = dict(model.parameters).get("intra_op_thread_count")
    assert (threads.string_value if threads else None) == ("2" if backend == "onnxruntime" else None)
    ensemble = parse_pbtxt(to_pbtxt(layout.ensemble_config({s: 3 for s in layout.steps}, 3)))
    # TRUNCATED: the tokenizer step's own output, straight to the client (which texts were cut)
    assert [o.name for o in ensemble.output] == ["LABEL", "SCORE", "TRUNCATED"] and [i.name for i in ensemble.input] == [
        "TEXT", "TEXT_PAIR"]
    tokenizer_step = ensemble.ensemble_scheduling.step[0]
    assert dict(tokenizer_step.output_map)["TRUNCATED"] == "TRUNCATED"
    assert [s.model_version for s in ensemble.ensemble_scheduling.step] == [3, 3, 3]
    assert json.loads(ensemble.parameters["tft"].string_value)["kind"] == "pair_classification"
    assert layout.tokenizer_settings()["pad_to_multiple_of"] == (1 if backend == "python" else 16)


def test_ner_layout_serves_entities_with_offsets():
    from tft.serve.layout import Layout
    from tft.serve.options import BuildOptions

    layout = Layout(NER, BuildOptions(name="n"))
    assert layout.outputs == [("ENTITIES", "TYPE_STRING", [1])] and not layout.pair_task
    tok = layout.tokenizer_config()
    assert [o.name for o in tok.output][-2:] == ["OFFSETS", "TRUNCATED"] and list(tok.output[-2].dims) == [-1, 2]
    assert list(layout.postprocess_config().input[0].dims) == [-1, 3]


def test_build_options_come_from_one_table():
    from tft.errors import TftError
    from tft.serve.backends import BACKENDS
    from tft.serve.options import BUILD, BuildOptions

    opts = BUILD.build({"backend": "onnxruntime", "max_batch": "8", "device": "gpu", "ort_tensorrt": True})
    assert opts == BuildOptions(backend="onnxruntime", max_batch=8, device="gpu", ort_tensorrt=True) and opts.gpu
    assert BUILD.rules["backend"].allowed() == tuple(BACKENDS)  # the CLI's choices are the registry's
    with pytest.raises(AttributeError):
        opts.backend = "python"  # frozen: a stage never edits another's options
    for values, says in (({"device": "gpu"}, "the python backend runs on the CPU"),
                         ({"ort_tensorrt": True}, "--ort-tensorrt is ONNX Runtime's TensorRT accelerator"),
                         ({"name": "../x"}, "--name '../x': use letters")):
        with pytest.raises(TftError, match=says):
            BUILD.build(values)


def test_export_options_and_thresholds(tmp_path):
    from tft.errors import TftError
    from tft.export.options import EXPORT, THRESHOLDS, ExportConfig

    cfg = EXPORT.build({"int8": True, "atol_fp32": "0.001"}, {"max_batch": 8})
    assert cfg == ExportConfig(int8=True, atol_fp32=0.001, max_batch=8)
    assert cfg.thresholds()["fp32"]["atol"] == 0.001 and cfg.thresholds()["int8"] == THRESHOLDS["int8"]
    config = tmp_path / "export.yaml"
    config.write_text("max-batch: 8\nint8: true\nmax_batch: 4\n")
    with pytest.raises(TftError, match="given twice"):
        EXPORT.load_yaml(config)
    config.write_text("device: npu\n")
    with pytest.raises(TftError, match="device: npu: choose one of auto, cpu, cuda, tensorrt"):
        EXPORT.load_yaml(config)


def test_a_yaml_key_given_twice_is_one_line_naming_it_and_its_line(tmp_path):
    from tft.errors import TftError
    from tft.train.config import load_yaml

    config = tmp_path / "train.yaml"
    config.write_text("task: afqmc\nlr: 1e-4\nepochs: 2\nlr: 5e-5\n")
    with pytest.raises(TftError) as e:
        load_yaml(config)
    assert e.value.format_message() == f"{config}:4: option 'lr' is given twice (first on line 2); keep one"


def test_answer_shapes_own_answers_decoding_agreement_and_metrics():
    from tft.answers import SHAPES, shape_of
    from tft.data.readers import TextExample

    label, score, entities = shape_of("pair_classification"), shape_of("regression"), shape_of("token_classification")
    assert (label, score, entities) == (SHAPES["label"], SHAPES["score"], SHAPES["entities"])
    logits = [np.array([0.0, 2.0]), np.array([3.0, 0.0])]
    answers = label.answers(logits, [{}, {}], [{"text": "a"}, {"text": "b"}], ("0", "1"), " ")
    assert [a["label"] for a in answers] == ["1", "0"] and 0.5 < answers[0]["score"] < 1
    decoded = label.decode({"LABEL": np.array([[b"1"], [b"0"]], dtype=object),
                            "SCORE": np.array([[0.9], [0.8]], dtype=np.float32)}, 2)
    assert [d["label"] for d in decoded] == ["1", "0"] and label.same(decoded[0], answers[0])
    gold = label.gold([TextExample("1", "a", None, "1"), TextExample("2", "b", None, "1")], ("0", "1"), " ")
    assert label.metric(answers, gold, ("0", "1"))["accuracy"] == 0.5
    assert score.decode({"LABEL": np.array([[b""]], dtype=object), "SCORE": np.array([[2.5]])}, 1) == [
        {"label": None, "score": 2.5}]
    ents = [{"type": "name", "text": "张三", "start": 0, "end": 2}]
    served = entities.decode({"ENTITIES": np.array([[json.dumps(ents).encode()]], dtype=object)}, 1)
    assert served == [{"entities": ents}] and entities.same(served[0], {"entities": ents})
    assert entities.score_diff(served[0], served[0]) is None and entities.strip({"id": 1, **served[0]}) == served[0]
    assert [n for n, _, _ in entities.outputs] == ["ENTITIES"]


def test_text_settings_come_from_the_manifest_as_the_served_tokenizer_reads_them():
    from tft.inference import TextSettings
    from tft.serve.layout import Layout
    from tft.serve.options import BuildOptions

    manifest = {**MANIFEST, "max_chars": 100}
    settings = TextSettings.of(manifest)
    assert (settings.max_chars, settings.pair, settings.word_joiner, settings.max_seq_length) == (100, True, " ", 64)
    assert Layout(manifest, BuildOptions(name="m")).tokenizer_settings()["max_chars"] == settings.max_chars
    # an export written before the top level recorded the fields: the nested checkpoint manifest says
    old = {k: v for k, v in NER.items() if k not in ("word_joiner", "max_chars")}
    old["checkpoint_manifest"] = {"word_joiner": "", "max_chars": 50}
    assert (TextSettings.of(old).word_joiner, TextSettings.of(old).max_chars) == ("", 50)


def test_a_build_is_recorded_and_its_records_checked(tiny_export, tmp_path):
    from tft.errors import TftError
    from tft.serve.options import BuildOptions
    from tft.serve.records import check_integrity, read_serve_manifests
    from tft.serve.repository import build_repository

    export, repo = tiny_export(), tmp_path / "repo"
    first = build_repository(export, repo, BuildOptions())
    assert (first["name"], first["max_batch"], first["version"]) == ("afqmc", 16, 1)
    second = build_repository(export, repo, BuildOptions(artifact="auto"))
    assert second["version"] == 2 and second["artifact_choice"][0]["chosen"]
    records = read_serve_manifests(repo)
    assert list(records) == ["afqmc"] and records["afqmc"]["version"] == 2
    assert check_integrity(repo) == len(second["files"])
    (repo / "afqmc_model" / "2" / "model.onnx").write_bytes(b"changed")
    with pytest.raises(TftError, match="differs from what `tft serve build` wrote"):
        check_integrity(repo)
    ner = build_repository(tiny_export("ner", task="cluener", kind="token_classification",
                                       labels=("O", "B-name", "I-name")), repo, BuildOptions(name="n"))
    assert ner["outputs"] == ["ENTITIES"] and set(read_serve_manifests(repo)) == {"afqmc", "n"}


def test_ort_tensorrt_builds_one_engine_for_the_whole_shape_range_while_loading():
    """Without profiles ONNX Runtime's TensorRT builds an engine per new batch x length at request time; the first
    canary request then builds inside the liveness timeout. With them, one engine covers 1x1..max, and a model
    warm-up builds it before Triton reports the model ready."""
    from tritonclient.grpc import model_config_pb2 as mc

    from tft.serve.layout import Layout, parse_pbtxt, to_pbtxt
    from tft.serve.options import BuildOptions

    layout = Layout(MANIFEST, BuildOptions(name="m", backend="onnxruntime", device="gpu", max_batch=16,
                                           ort_tensorrt=True))
    model = parse_pbtxt(to_pbtxt(layout.model_config()))
    params = dict(model.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    assert params["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert params["trt_profile_opt_shapes"] == "input_ids:8x64,attention_mask:8x64"
    assert params["trt_profile_max_shapes"] == "input_ids:16x64,attention_mask:16x64"
    assert params["trt_timing_cache_enable"] == "1" and params["trt_engine_cache_enable"] == "1"
    [warm] = model.model_warmup
    assert warm.batch_size == 8 and set(warm.inputs) == {"input_ids", "attention_mask"}
    assert all(list(i.dims) == [64] and i.zero_data and i.data_type == mc.TYPE_INT64 for i in warm.inputs.values())
    plain = parse_pbtxt(to_pbtxt(Layout(MANIFEST, BuildOptions(name="m", backend="onnxruntime",
                                                               device="gpu")).model_config()))
    # no TensorRT, no warm-up; only the cuda accelerator that keeps an fp32 graph in fp32 (TF32 off)
    assert not plain.model_warmup and [a.name for a in plain.optimization.execution_accelerators
                                       .gpu_execution_accelerator] == ["cuda"]


def test_ort_tensorrt_serves_what_export_checked_and_never_a_partitioned_graph(tiny_export):
    """--ort-tensorrt ran every artifact at FP16 (an fp32 artifact then failed verify's fp32 rule), and --artifact
    auto could pick the fused or dynamic-int8 graph, which ONNX Runtime refuses with explicit shape profiles."""
    import json

    from tft.errors import TftError
    from tft.serve.artifacts import pick_artifact, tensorrt_partitioned
    from tft.serve.layout import Layout
    from tft.serve.options import BuildOptions

    gpu = dict(name="m", backend="onnxruntime", device="gpu", ort_tensorrt=True)
    assert Layout(MANIFEST, BuildOptions(**gpu), precision="fp32").ort_tensorrt_parameters()["precision_mode"] == "FP32"
    assert Layout(MANIFEST, BuildOptions(**gpu), precision="fp16").ort_tensorrt_parameters()["precision_mode"] == "FP16"
    export = tiny_export()
    manifest = json.loads((export / "manifest.json").read_text())
    fp32 = manifest["artifacts"][0]
    parity = {**fp32["parity"], "rows_per_s": 1000.0}
    manifest["artifacts"] += [{**fp32, "name": "fp32-optimized", "file": "model.opt.onnx", "parity": parity,
                               "fused_operators": {"Attention": 2}},
                              {**fp32, "name": "fp16", "precision": "fp16", "parity": {**parity, "rows_per_s": 500.0}}]
    assert set(tensorrt_partitioned(manifest)) == {"fp32-optimized"}
    chosen = pick_artifact(manifest, BuildOptions(**gpu, artifact="auto"))
    assert chosen["name"] == "fp16" and "fp32-optimized" in {c["name"] for c in chosen["choice"] if c.get("skipped")}
    with pytest.raises(TftError, match="--artifact fp32-optimized: ONNX Runtime's fused operators are its own"):
        pick_artifact(manifest, BuildOptions(**gpu, artifact="fp32-optimized"))
    assert pick_artifact(manifest, BuildOptions(name="m", backend="onnxruntime", device="gpu", artifact="auto"))["name"] == \
        "fp32-optimized"  # without TensorRT inside, the fused graph is ONNX Runtime's own and may be served
