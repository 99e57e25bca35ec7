"""TensorRT engines, up to the hardware boundary: the build plan for TensorRT 10 and 11 (pure Python), the
thin executor run against a recording stand-in of each version's Python API (TensorRT 11 has no
BuilderFlag.FP16: touching it fails, as it does on a fresh `pip install tft-toolchain[trt]`), and the one-line
refusal on this GPU-less machine."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tft.export import trt as trt_mod

GRAPHS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
SHAPES = dict(inputs=("input_ids", "attention_mask"), max_batch=16, max_len=128, opt_batch=8, opt_len=64)


def plan(version, precision="fp16", graphs=GRAPHS, **kw):
    return trt_mod.plan_engine(trt_version=version, precision=precision, graphs=graphs, gpu="NVIDIA H100 80GB HBM3",
                               cache_root=Path("/cache"), **{**SHAPES, **kw})


def test_tensorrt_10_builds_fp16_from_the_fp32_graph_with_the_flag():
    p = plan("10.7.0")
    assert (p.onnx_file, p.builder_flags, p.strongly_typed) == ("model.onnx", ("FP16",), False)
    assert p.profile == {"min": [1, 1], "opt": [8, 64], "max": [16, 128]} and p.workspace_bytes == 4 << 30


def test_tensorrt_11_builds_fp16_from_the_fp16_graph_strongly_typed():
    p = plan("11.1.0")
    assert (p.onnx_file, p.builder_flags, p.strongly_typed) == ("model.fp16.onnx", (), True)
    with pytest.raises(trt_mod.EngineError, match="fp16 ONNX graph: export with --fp16"):
        plan("11.1.0", graphs={"fp32": "model.onnx"})


@pytest.mark.parametrize("version", ["10.7.0", "11.1.0"])
def test_int8_needs_an_explicitly_quantized_graph(version):
    with pytest.raises(trt_mod.EngineError, match="Q/DQ"):
        plan(version, precision="int8")
    p = plan(version, precision="int8", graphs={**GRAPHS, "qdq": "model.qdq.onnx"})
    # explicit quantization: strongly typed, no precision flags (TensorRT's Explicit Quantization guide)
    assert p.onnx_file == "model.qdq.onnx" and p.builder_flags == () and p.strongly_typed


@pytest.mark.parametrize("version", ["10.7.0", "11.1.0"])
def test_version_compatible_engines_and_timing_cache_outside_the_export(version):
    p = plan(version, version_compatible=True)
    assert "VERSION_COMPATIBLE" in p.builder_flags and p.version_compatible
    assert p.timing_cache == f"/cache/tensorrt/timing-{version}-nvidia-h100-80gb-hbm3.cache"


def test_timing_caches_are_per_gpu_and_version():
    a = trt_mod.timing_cache_path(Path("/c"), "10.7.0", "NVIDIA A100-SXM4-40GB")
    b = trt_mod.timing_cache_path(Path("/c"), "10.7.0", "NVIDIA H100 80GB HBM3")
    c = trt_mod.timing_cache_path(Path("/c"), "11.1.0", "NVIDIA A100-SXM4-40GB")
    assert len({a, b, c}) == 3 and a.parent == Path("/c/tensorrt")


@pytest.mark.parametrize("kw,message", [
    ({"opt_batch": 32}, "profile shapes out of order"),
    ({"opt_len": 0}, "profile shapes out of order"),
    ({"precision": "fp8"}, "unknown engine precision"),
])
def test_bad_plans_are_one_line(kw, message):
    with pytest.raises(trt_mod.EngineError, match=message):
        plan("10.7.0", **kw)
    with pytest.raises(trt_mod.EngineError, match="too old"):
        plan("8.6.1")


def fake_tensorrt(version: str, calls: list):
    """The part of the TensorRT Python API that build_engine uses, as each major version has it."""
    major = int(version.split(".")[0])
    flag_names = ["VERSION_COMPATIBLE", "REFIT"] + (["FP16", "INT8"] if major == 10 else [])
    BuilderFlag = types.SimpleNamespace(**{n: n for n in flag_names})

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("workspace", size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def create_timing_cache(self, data):
            return data

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("timing_cache", bytes(cache)))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"cache-v2")

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network_flags", flags))
            return "network"

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"engine"

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            return True

    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.Logger = type("Logger", (), {"WARNING": 1, "__init__": lambda self, level: None})
    module.Builder, module.OnnxParser, module.BuilderFlag = Builder, OnnxParser, BuilderFlag
    module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    if major == 10:
        module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    return module


@pytest.mark.parametrize("version,parsed,flags,network_flags", [
    ("10.7.0", "model.onnx", ["FP16", "VERSION_COMPATIBLE"], 0),
    ("11.1.0", "model.fp16.onnx", ["VERSION_COMPATIBLE"], 0),
])
def test_the_executor_does_what_the_plan_says(version, parsed, flags, network_flags, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls))
    p = trt_mod.plan_engine(trt_version=version, precision="fp16", graphs=GRAPHS, gpu="GPU", cache_root=tmp_path,
                            version_compatible=True, **SHAPES)
    (tmp_path / "tensorrt").mkdir()
    Path(p.timing_cache).write_bytes(b"cache-v1")
    info = trt_mod.build_engine(p, tmp_path, tmp_path / "model.plan")
    assert ("parse", parsed) in calls and [c[1] for c in calls if c[0] == "flag"] == flags
    assert ("network_flags", network_flags) in calls and ("timing_cache", b"cache-v1") in calls
    assert dict(calls)["profile"] == {n: ((1, 1), (8, 64), (16, 128)) for n in SHAPES["inputs"]}
    assert (tmp_path / "model.plan").read_bytes() == b"engine" and Path(p.timing_cache).read_bytes() == b"cache-v2"
    assert info["tensorrt_version"] == version and info["plan"]["onnx_file"] == parsed


def test_without_a_gpu_the_check_is_one_line():
    with pytest.raises(trt_mod.TensorRTUnavailable, match="an NVIDIA GPU with CUDA"):
        trt_mod.check_available()


def test_onnx_runtime_devices():
    from tft.errors import TftError
    from tft.export.runtime import providers_for

    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("auto", cpu_only) == ["CPUExecutionProvider"]
    # fp32 parity in fp32: ONNX Runtime's CUDA provider computes fp32 MatMuls in TF32 unless told not to
    assert providers_for("auto", gpu) == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert providers_for("cuda", gpu, precision="fp16") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # TensorRT's provider builds fp16 engines for fp16 artifacts only
    for precision, fp16 in (("fp16", True), ("fp32", False), ("int8", False)):
        chain = providers_for("tensorrt", gpu, Path("/c"), precision=precision)
        assert chain[0] == ("TensorrtExecutionProvider", {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                                                          "trt_engine_cache_path": "/c"})
    with pytest.raises(TftError, match="--device cuda: this ONNX Runtime offers CPUExecutionProvider"):
        providers_for("cuda", cpu_only)
    with pytest.raises(TftError, match="choose one of"):
        providers_for("npu", gpu)


def test_a_session_that_fell_back_to_the_cpu_is_one_line():
    """ONNX Runtime falls back to the CPU, silently, where CUDA's libraries cannot be loaded: tft checks the provider
    it got (InferenceSession.get_providers()) against the one it asked for."""
    from tft.errors import TftError
    from tft.export.runtime import check_provider

    asked = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    check_provider("m.onnx", asked, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    check_provider("m.onnx", ["CPUExecutionProvider"], ["CPUExecutionProvider"])
    with pytest.raises(TftError, match="m.onnx: ONNX Runtime was asked for CUDAExecutionProvider and runs on "
                                       "CPUExecutionProvider: the CUDA/cuDNN"):
        check_provider("m.onnx", asked, ["CPUExecutionProvider"])


def test_gpu_repository_configs(tiny_export, tmp_path):
    """`tft serve build --device gpu`: KIND_GPU instances for Triton's own backends, ONNX Runtime's TensorRT
    accelerator on request (the onnxruntime_backend README's parameters), one-line refusals otherwise."""
    from tritonclient.grpc import model_config_pb2 as mc

    from helpers import run_tft
    from tft.serve.layout import parse_pbtxt

    pair_export = tiny_export()
    repo = tmp_path / "gpu"
    proc = run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "g",
                   "--backend", "onnxruntime", "--device", "gpu", "--ort-tensorrt")
    assert proc.returncode == 0, proc.stderr
    c = parse_pbtxt((repo / "g_model" / "config.pbtxt").read_text())
    assert c.platform == "onnxruntime_onnx" and c.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    accelerator = c.optimization.execution_accelerators.gpu_execution_accelerator[0]
    shapes = {which: ",".join(f"{n}:{b}x{s}" for n in ("input_ids", "attention_mask", "token_type_ids"))
              for which, (b, s) in {"min": (1, 1), "opt": (8, 64), "max": (16, 64)}.items()}
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {
        # the tiny export serves its fp32 graph: TensorRT inside ONNX Runtime runs it in FP32, as export checked it
        "precision_mode": "FP32", "max_workspace_size_bytes": str(1 << 30), "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/tmp/tft-ort-trt-cache", "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": "/tmp/tft-ort-trt-cache",
        **{f"trt_profile_{which}_shapes": value for which, value in shapes.items()}}
    assert [w.batch_size for w in c.model_warmup] == [8]
    tok = parse_pbtxt((repo / "g_tokenizer" / "config.pbtxt").read_text())
    assert tok.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU  # the Python steps stay on the CPU
    for args, says in ((("--backend", "python", "--device", "gpu"), "the python backend runs on the CPU"),
                       (("--backend", "onnxruntime", "--ort-tensorrt"), "it needs --backend onnxruntime --device gpu")):
        proc = run_tft("serve", "build", "--export", pair_export, "--repository", tmp_path / "bad", *args)
        assert proc.returncode == 1 and says in proc.stderr and not (tmp_path / "bad").exists(), proc.stderr


def test_parity_batches_never_exceed_the_engine_profile():
    from tft.export.parity import parity_batches

    features = [{"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0]}] * 100
    for max_batch in (1, 4, 16, 64):
        batches = parity_batches(features, ["input_ids", "attention_mask"], max_batch, 32, 50, 2, 3)
        assert max(len(b["input_ids"]) for _, b, _ in batches) == max_batch


def test_fixed_shape_backends_never_get_a_length_past_the_model(trained_pair, tmp_path):
    """The tokenizer step buckets lengths to multiples of 16 for Triton's native backends; with a maximum of
    100 tokens it must stop at 100, not 112 (the engine's profile would refuse every such request)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from helpers import ServeProcess, run_tft
    from tft.serve.client import text_inputs

    export = tmp_path / "exp"
    assert run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", export, "--max-seq-length", 100,
                   "--max-batch", 4, "--parity-samples", 8).returncode == 0
    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", export, "--repository", repo, "--name", "fx",
                   "--backend", "onnxruntime").returncode == 0
    # the embedded Triton has no onnxruntime backend: the tokenizer step loads on its own (Python backend)
    server = ServeProcess(repo, tmp_path, health_interval=0, extra=("--model", "fx_tokenizer")).wait_ready()
    try:
        client = grpcclient.InferenceServerClient(server.url)
        long_text = "花呗怎么还款" * 60
        for texts in (["花呗"], [long_text], [long_text, "借呗"]):
            result = client.infer("fx_tokenizer", text_inputs(grpcclient, texts, texts))
            width = result.as_numpy("input_ids").shape[1]
            assert width % 16 == 0 or width == 100, width
            assert width <= 100
        assert np.count_nonzero(result.as_numpy("attention_mask")[0]) == 100
    finally:
        server.stop()


def test_an_engine_must_match_the_serving_tensorrt():
    from tft.serve.artifacts import engine_loads_on

    assert engine_loads_on("10.7.0.23", "10.7.0", False)
    assert not engine_loads_on("10.7.0", "10.8.0", False)  # an engine loads only on the TensorRT that built it
    assert engine_loads_on("10.7.0", "10.8.0", True)  # version-compatible: later releases of the same major
    assert not engine_loads_on("10.8.0", "10.7.0", True) and not engine_loads_on("11.1.0", "10.7.0", True)
    # TensorRT 11's support matrix: a version-compatible TensorRT 10 engine loads on TensorRT 11
    assert engine_loads_on("10.7.0", "11.4.0", True) and not engine_loads_on("10.7.0", "11.4.0", False)


def export_with_engine(source, tmp_path, **engine):
    """A copy of a tiny export with a TensorRT engine recorded as a GPU machine's export records one."""
    import json
    import shutil

    from tft.fsutil import file_sha256

    export = tmp_path / "exp"
    shutil.copytree(source, export)
    (export / "model.plan").write_bytes(b"engine bytes")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"].append({"name": "tensorrt-fp16", "file": "model.plan", "precision": "fp16",
                                  "runtime": "tensorrt", "sha256": file_sha256(export / "model.plan"),
                                  "tensorrt_version": "10.7.0", **engine})
    (export / "manifest.json").write_text(json.dumps(manifest))
    return export


def test_serve_build_refuses_an_engine_from_another_tensorrt(tiny_export, tmp_path):
    """An export as a GPU machine writes it (a TensorRT artifact recorded in the manifest), served with a
    container whose TensorRT differs: one line, nothing written."""
    import json

    from helpers import run_tft

    export = export_with_engine(tiny_export(), tmp_path, version_compatible=False)
    repo = tmp_path / "repo"
    proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--backend", "tensorrt",
                   "--tensorrt-version", "10.8.0")
    assert proc.returncode == 1 and "built by TensorRT 10.7.0; the server's TensorRT 10.8.0 cannot load it" in proc.stderr
    # a -trtllm-python-py3 image carries no tensorrt backend (server issue #7346): refused, naming the -py3 one
    proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--backend", "tensorrt",
                   "--triton-image", "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3")
    assert proc.returncode == 1 and "not the onnxruntime or tensorrt backends (server issue #7346); serve with " \
        "24.11-py3" in proc.stderr
    # a -py3 image whose TensorRT only NVIDIA's Frameworks Support Matrix lists, not tft's table: given by hand
    proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--backend", "tensorrt",
                   "--triton-image", "24.11")
    assert proc.returncode == 1 and "give it with --tensorrt-version X.Y.Z.B" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not repo.exists()
    # one whose release notes list it (24.10: 10.5.0.18): checked without being asked
    proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--backend", "tensorrt",
                   "--triton-image", "24.10")
    assert proc.returncode == 1 and "the server's TensorRT 10.5.0.18 cannot load it" in proc.stderr
    proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--backend", "tensorrt",
                   "--triton-image", "24.12-py3", "--tensorrt-version", "10.7.0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((repo / "afqmc" / "tft-serve.json").read_text())["target"]["python"] == "3.12.3"
    from tritonclient.grpc import model_config_pb2 as mc

    from tft.serve.layout import parse_pbtxt

    c = parse_pbtxt((repo / "afqmc_model" / "config.pbtxt").read_text())
    assert c.platform == "tensorrt_plan" and c.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


@pytest.mark.parametrize("asked, cuda, tensorrt, builds, says", [
    (None, True, True, True, None),  # a GPU host with TensorRT: an engine by default
    (None, True, False, False, "CUDA is here but the tensorrt package is not (pip install 'tft-toolchain[trt]')"),
    (None, False, True, False, None),  # no GPU: ONNX, nothing to say
    (None, False, False, False, None),
    (True, False, False, True, None),  # asked for: export tries, and says in one line what is missing
    (False, True, True, False, None),
])
def test_the_pipeline_builds_an_engine_only_where_it_can(asked, cuda, tensorrt, builds, says):
    from tft.pipeline import engine_choice

    build, note = engine_choice(asked, cuda, tensorrt)
    assert build is builds
    assert (note is None) if says is None else (says in note)


def test_a_full_triton_install_runs_instead_of_the_embedded_one(tmp_path, monkeypatch):
    """Inside NVIDIA's container (TFT_TRITON_ROOT=/opt/tritonserver) that Triton, with its own backends,
    serves the repository; a root without the binary or backends is one line."""
    from tft.serve.server import Ports, ServerError, TritonServer

    root = tmp_path / "opt" / "tritonserver"
    monkeypatch.setenv("TFT_TRITON_ROOT", str(root))
    server = TritonServer(tmp_path / "repo", Ports(8001, 8000, 8002))
    with pytest.raises(ServerError, match="no bin/tritonserver there"):
        server.command()
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    with pytest.raises(ServerError, match="no backends/ folder there"):
        server.command()
    (root / "backends" / "tensorrt").mkdir(parents=True)
    cmd = server.command()
    assert cmd[0] == str(root / "bin" / "tritonserver")
    assert f"--backend-directory={root / 'backends'}" in cmd and not any(a.startswith("--cache-directory") for a in cmd)
    monkeypatch.delenv("TFT_TRITON_ROOT")
    embedded = server.command()
    assert "pytriton" in embedded[0] and any(a.startswith("--cache-directory") for a in embedded)


def test_verify_of_a_served_engine_compares_with_pytorch_at_fp16(tiny_export, tmp_path):
    """A TensorRT engine has no ONNX Runtime twin: verify judges it against PyTorch by the fp16 gate."""
    import json
    import shutil

    from tft.fsutil import file_sha256
    from tft.verify import _engine_artifact

    export = tmp_path / "exp"
    shutil.copytree(tiny_export(), export)
    (export / "model.plan").write_bytes(b"engine bytes")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"].append({"name": "tensorrt-fp16", "file": "model.plan", "precision": "fp16",
                                  "runtime": "tensorrt", "sha256": file_sha256(export / "model.plan")})
    (export / "manifest.json").write_text(json.dumps(manifest))
    assert _engine_artifact(export, "tensorrt-fp16")["precision"] == "fp16"
    assert _engine_artifact(export, "fp16") is None and _engine_artifact(export, "fp32") is None


def test_hardware_compatible_engines_are_planned_for_ampere_and_newer_only():
    """TensorRT's AMPERE_PLUS level: engines for any Ampere or newer GPU, built only on one."""
    p = plan("10.7.0", hardware_compatible=True, capability=(9, 0))
    assert p.hardware_compatibility == "AMPERE_PLUS" and plan("10.7.0").hardware_compatibility is None
    with pytest.raises(trt_mod.EngineError, match="needs one to build on; this NVIDIA H100 80GB HBM3 has compute "
                                                  "capability 7.5"):
        plan("11.1.0", hardware_compatible=True, capability=(7, 5))


def test_the_executor_sets_the_hardware_compatibility_level(tmp_path, monkeypatch):
    calls: list = []
    module = fake_tensorrt("10.7.0", calls)
    module.HardwareCompatibilityLevel = types.SimpleNamespace(NONE="none", AMPERE_PLUS="ampere+")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    p = trt_mod.plan_engine(trt_version="10.7.0", precision="fp16", graphs=GRAPHS, gpu="GPU", cache_root=tmp_path,
                            hardware_compatible=True, capability=(8, 6), **SHAPES)
    configs = []
    original = module.Builder.create_builder_config
    module.Builder.create_builder_config = lambda self: configs.append(original(self)) or configs[-1]
    trt_mod.build_engine(p, tmp_path, tmp_path / "model.plan")
    assert configs[0].hardware_compatibility_level == "ampere+"


@pytest.mark.parametrize("built, hardware_compatible, gpu, runs", [
    ((8, 0), False, "8.0", True), ((8, 0), False, "9.0", False), ((9, 0), False, "8.6", False),
    ((8, 6), True, "9.0", True), ((9, 0), True, "8.0", True), ((9, 0), True, "7.5", False), (None, False, "8.0", False),
])
def test_serve_build_checks_an_engine_against_the_serving_gpu(tiny_export, tmp_path, built, hardware_compatible,
                                                                gpu, runs):
    from tft.serve.backends import RepositoryError
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    export = export_with_engine(tiny_export(), tmp_path, gpu="NVIDIA A100", compute_capability=built,
                                hardware_compatible=hardware_compatible)
    # the serving TensorRT is the engine's own (without it the default image's, 24.10's 10.5.0.18, is checked)
    opts = BuildOptions(name="m", backend="tensorrt", gpu_capability=gpu, tensorrt_version="10.7.0")
    if runs:
        assert build_repository(export, tmp_path / "repo", opts)["artifact"] == "tensorrt-fp16"
    else:
        with pytest.raises(RepositoryError, match=f"a GPU of compute capability {gpu} cannot run it"):
            build_repository(export, tmp_path / "repo", opts)
        assert not (tmp_path / "repo").exists()


def test_the_pipeline_takes_the_images_tensorrt_and_checks_it_before_training(tmp_path):
    """`tft pipeline --backend tensorrt --triton-image T` could never pass (no --tensorrt-version there, and the table
    lacked every image's TensorRT); now an unknown one is one line before training, and it can be given."""
    from helpers import one_line_error, run_tft

    from tft.pipeline import PIPELINE, PipelineConfig, check_engine_target
    from tft.serve.options import BuildOptions
    from tft.train.config import TrainConfig

    line = one_line_error(run_tft("pipeline", "--task", "sst2", "--data-dir", tmp_path, "--backend", "tensorrt",
                                  "--triton-image", "24.11-py3", "--output-dir", tmp_path / "p"))
    assert "24.11-py3 (TensorRT 10)" in line and "--tensorrt-version" in line and not (tmp_path / "p").exists()
    own = PIPELINE.build({"backend": "tensorrt", "triton_image": "24.11-py3", "tensorrt_version": "10.6.0.26"}, {})
    config = PipelineConfig.compose(TrainConfig(task="sst2"), own, tmp_path / "p", trt=True)
    assert config.build.tensorrt_version == "10.6.0.26"
    check_engine_target(BuildOptions(backend="tensorrt", triton_image="24.10-py3"))  # the table knows 24.10's
