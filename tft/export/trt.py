"""TensorRT engine from the ONNX graph (NVIDIA GPU + the `tensorrt` package from tft[trt]).

Engines are specific to the TensorRT version and GPU that built them; the manifest records both.
"""

from __future__ import annotations

from pathlib import Path

from tft.errors import TftError


class TensorRTUnavailable(TftError):
    pass


def check_available() -> None:
    """Raise one line naming what is missing: CUDA, the tensorrt package, or both."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU with CUDA (none is visible)")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the tensorrt package (pip install 'tft[trt]')")
    if missing:
        raise TensorRTUnavailable("--trt needs " + " and ".join(missing) + "; the ONNX artifacts are complete")


def build_engine(onnx_path: Path, plan_path: Path, inputs, max_batch: int, max_len: int, opt_batch: int,
                 opt_len: int, fp16: bool = True, timing_cache: Path | None = None, workspace_gib: int = 4) -> dict:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TftError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name in inputs:
        profile.set_shape(name, (1, 1), (opt_batch, opt_len), (max_batch, max_len))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TftError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    Path(plan_path).write_bytes(bytes(plan))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    import torch

    return {"tensorrt_version": trt.__version__, "gpu": torch.cuda.get_device_name(0),
            "profile": {"min": [1, 1], "opt": [opt_batch, opt_len], "max": [max_batch, max_len]}, "fp16": fp16}


class TrtModel:
    """Polygraphy's TrtRunner over a serialized engine, as a parity runner."""

    def __init__(self, plan_path: Path):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self.runner = TrtRunner(EngineFromBytes(BytesFromPath(str(plan_path))))
        self.runner.activate()

    def __call__(self, batch):
        out = self.runner.infer(feed_dict=dict(batch))
        return out["logits"]

    def close(self):
        self.runner.deactivate()
