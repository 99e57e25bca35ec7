"""TensorRT engines from the exported ONNX graphs (NVIDIA GPU + the `tensorrt` package from tft-toolchain[trt]).

Every decision (which ONNX graph, which builder flags, the profile, the workspace, the timing cache) is
made by `plan_engine`, plain Python that the tests run for TensorRT 10 and 11 on any machine; only
`build_engine` and `TrtModel` touch TensorRT, and they execute the plan.

TensorRT 10 builds fp16 engines from the fp32 graph with `BuilderFlag.FP16` (weak typing). TensorRT 11
removed the precision flags: networks are strongly typed, so the precision comes from the graph's own
types, and an fp16 engine is built from the fp16 ONNX graph (`model.fp16.onnx`, LayerNorm and Softmax
kept in fp32). int8 needs explicit quantization on both: the Q/DQ graph of `--int8-static`, built
strongly typed with no precision flags ("Use explicit quantization with Strong Typing. Precision-control
build flags are not required and should not be specified": TensorRT's "Explicit Quantization" guide).
The dynamic `int8` artifact has no Q/DQ nodes and TensorRT cannot build it: refused in one line.
An engine only loads on the TensorRT version that built it, unless built version-compatible
(`--trt-version-compatible`, `BuilderFlag.VERSION_COMPATIBLE`): the manifest records both facts.
Likewise an engine runs only on GPUs like the one that built it ("By default, TensorRT engines are compatible only
with the type of device where they were built": TensorRT's Engine Compatibility guide), unless built with
`--trt-hardware-compatible` (`HardwareCompatibilityLevel.AMPERE_PLUS`: "compatible with Ampere and newer GPUs",
"only supported for engines built on NVIDIA Ampere and later GPUs", fewer tactics, so slower): the manifest records
the building GPU's compute capability and the level, and `tft serve build --gpu-capability` checks them.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tft.errors import TftError
from tft.manifest import AMPERE_PLUS_MIN_CAPABILITY


class TensorRTUnavailable(TftError):
    pass


class EngineError(TftError):
    """The engine cannot be planned or built with these options."""


@dataclass(frozen=True)
class EnginePlan:
    trt_version: str
    onnx_file: str  # the export's graph the builder parses
    precision: str
    builder_flags: tuple[str, ...]  # names of tensorrt.BuilderFlag members to set
    strongly_typed: bool  # precision from the graph's types (always on TensorRT 11)
    inputs: tuple[str, ...]
    profile: dict  # {"min": [b, s], "opt": [b, s], "max": [b, s]}, the same for every input
    workspace_bytes: int
    version_compatible: bool
    timing_cache: str
    hardware_compatibility: str | None = None  # a tensorrt.HardwareCompatibilityLevel member name, or None

    @property
    def major(self) -> int:
        return trt_major(self.trt_version)

    def to_dict(self) -> dict:
        return asdict(self)


def trt_major(version: str) -> int:
    match = re.match(r"(\d+)\.", str(version))
    if not match:
        raise EngineError(f"cannot read the TensorRT version {version!r}")
    return int(match.group(1))


def timing_cache_path(cache_root: Path, trt_version: str, gpu: str) -> Path:
    """Timing caches outlive export folders: one per TensorRT version and GPU, in the user cache."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-").lower() or "gpu"
    return Path(cache_root) / "tensorrt" / f"timing-{trt_version}-{slug}.cache"


def plan_engine(*, trt_version: str, precision: str, inputs, max_batch: int, max_len: int, opt_batch: int,
                opt_len: int, graphs: dict[str, str], gpu: str, cache_root: Path, version_compatible: bool = False,
                workspace_gib: int = 4, hardware_compatible: bool = False,
                capability: tuple[int, int] | None = None) -> EnginePlan:
    """What to build. `graphs` maps the export's ONNX graphs by kind: fp32, fp16, qdq (explicit int8)."""
    major = trt_major(trt_version)
    if major < 10:
        raise EngineError(f"TensorRT {trt_version} is too old: tft builds with TensorRT 10 or 11")
    if not 1 <= opt_batch <= max_batch or not 1 <= opt_len <= max_len:
        raise EngineError(f"profile shapes out of order: opt {opt_batch}x{opt_len}, max {max_batch}x{max_len}")
    flags: list[str] = []
    if precision == "fp16":
        if major == 10:
            onnx_file, strongly_typed = graphs["fp32"], False
            flags.append("FP16")
        else:
            if "fp16" not in graphs:
                raise EngineError("TensorRT 11 builds fp16 engines from the fp16 ONNX graph: export with --fp16")
            onnx_file, strongly_typed = graphs["fp16"], True
    elif precision == "int8":
        if "qdq" not in graphs:
            raise EngineError("TensorRT int8 needs an explicitly quantized (Q/DQ) ONNX graph: export with "
                              "--int8-static (the dynamic int8 artifact is ONNX Runtime's, TensorRT cannot build it)")
        onnx_file, strongly_typed = graphs["qdq"], True
    elif precision == "fp32":
        onnx_file, strongly_typed = graphs["fp32"], major >= 11
    else:
        raise EngineError(f"unknown engine precision {precision!r}; choose fp16, int8 or fp32")
    if version_compatible:
        flags.append("VERSION_COMPATIBLE")
    if hardware_compatible and capability is not None and tuple(capability) < AMPERE_PLUS_MIN_CAPABILITY:
        raise EngineError(f"--trt-hardware-compatible builds engines for Ampere and newer GPUs and needs one to build "
                          f"on; this {gpu} has compute capability {capability[0]}.{capability[1]}")
    return EnginePlan(
        trt_version=trt_version, onnx_file=onnx_file, precision=precision, builder_flags=tuple(flags),
        strongly_typed=strongly_typed, inputs=tuple(inputs),
        profile={"min": [1, 1], "opt": [opt_batch, opt_len], "max": [max_batch, max_len]},
        workspace_bytes=workspace_gib << 30, version_compatible=version_compatible,
        timing_cache=str(timing_cache_path(cache_root, trt_version, gpu)),
        hardware_compatibility="AMPERE_PLUS" if hardware_compatible else None)



def check_available() -> tuple[str, str, tuple[int, int]]:
    """(TensorRT version, GPU name, compute capability), or one line naming what is missing."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU with CUDA (none is visible)")
    try:
        import tensorrt
    except ImportError:
        missing.append("the tensorrt package (pip install 'tft-toolchain[trt]')")
        tensorrt = None
    if missing:
        raise TensorRTUnavailable("--trt needs " + " and ".join(missing) + "; the ONNX artifacts are complete")
    return tensorrt.__version__, torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def build_engine(plan: EnginePlan, export_dir: Path, plan_path: Path) -> dict:
    """Execute the plan with TensorRT; returns what the manifest records."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and plan.major == 10:  # TensorRT 11 networks are always strongly typed
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = Path(export_dir) / plan.onnx_file
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_compatibility:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compatibility)
    cache_file = Path(plan.timing_cache)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name in plan.inputs:
        profile.set_shape(name, tuple(plan.profile["min"]), tuple(plan.profile["opt"]), tuple(plan.profile["max"]))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
    tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    os.replace(tmp, cache_file)
    return {"tensorrt_version": plan.trt_version, "plan": plan.to_dict()}


class TrtModel:
    """Polygraphy's TrtRunner over a serialized engine, as a parity runner."""

    def __init__(self, plan_path: Path, version_compatible: bool = False):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        # a version-compatible plan embeds the lean runtime: its host code must be allowed to run
        runtime = _host_code_runtime() if version_compatible else None
        self.runner = TrtRunner(EngineFromBytes(BytesFromPath(str(plan_path)), runtime=runtime))
        self.runner.activate()

    def __call__(self, batch):
        out = self.runner.infer(feed_dict=dict(batch))
        return out["logits"]

    def close(self):
        self.runner.deactivate()


def _host_code_runtime():
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = True
    return runtime
