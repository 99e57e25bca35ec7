"""The Triton backends that can serve the model step, as data: a new backend is one entry in BACKENDS.

Light on purpose (no protobuf, no tritonclient): the CLI reads its `--backend` and `--device` choices from
here, and the layout, the build and the artifact choice read each backend's decisions from its entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tft.errors import TftError


@dataclass(frozen=True)
class Backend:
    """How one Triton backend serves the model step."""

    name: str
    model_file: str  # the file in the version folder
    runtime: str  # the export artifacts it serves (their manifest `runtime`)
    also_runs: tuple[tuple[str, str, str], ...] = ()  # other runtimes it serves: (runtime, its model file, model.py)
    platform: str = ""  # Triton platform of a native backend
    backend: str = ""  # Triton backend of a Python-backend model
    python_model: str = ""  # its model.py, from tft/serve/models
    ragged: bool = False  # pads ragged batches itself; else fixed shapes: the tokenizer buckets lengths
    device: str = "any"  # cpu | gpu | any
    default_artifact: str = ""  # "" = the export's fp32 graph
    packages: tuple[str, ...] = ()  # what its model.py imports, beyond numpy and tokenizers
    thread_parameter: str = ""  # the model config parameter that sets ONNX Runtime's intra-op threads, if any
    accelerators: tuple[str, ...] = ()  # GPU execution accelerators its config may name (--ort-tensorrt)
    engine: bool = False  # serves TensorRT engines, each built for one TensorRT version (the image's must load it)
    onnxruntime_from: str = ""  # whose ONNX Runtime runs its graphs: "image" (the backend's), "pip" (the stub's), ""
    image_openvino: bool = False  # reads IR with the image's OpenVINO (its version bounds the IR it can read)
    fixed_parameters: tuple[tuple[str, object], ...] = ()  # config parameters it always gets
    bf16_parameter: tuple[str, object] | None = None  # the config parameter that asks for bf16, where it has one
    tf32_switch: str = ""  # on GPUs, how fp32 stays fp32: "accelerator" (use_tf32 from r24.06), "env", "" (no CUDA)
    export_flag: str = ""  # the `tft export` option that writes its artifacts, when the default export does not
    reads_windows: bool = False  # its model step runs a text's overlapping windows (per-token tasks' long texts)
    help: str = ""  # one line for `--help`

    def runs_on(self, device: str) -> bool:
        return self.device in ("any", device)

    @property
    def runtimes(self) -> tuple[str, ...]:
        return (self.runtime, *(r for r, _, _ in self.also_runs))

    def files_for(self, runtime: str) -> tuple[str, str]:
        """(the model file in the version folder, the Python model or "") of an artifact of `runtime`."""
        for other, model_file, python_model in self.also_runs:
            if other == runtime:
                return model_file, python_model
        return self.model_file, self.python_model


BACKENDS = {
    "python": Backend("python", "model.onnx", "onnxruntime", backend="python", python_model="model_step.py",
                      also_runs=(("openvino", "model.xml", "model_step.py"),),
                      ragged=True, device="cpu", packages=("onnxruntime",), onnxruntime_from="pip", reads_windows=True,
                      help="ONNX Runtime or OpenVINO inside a Python-backend model (runs on the embedded Triton)"),
    "onnxruntime": Backend("onnxruntime", "model.onnx", "onnxruntime", platform="onnxruntime_onnx",
                           thread_parameter="intra_op_thread_count", accelerators=("tensorrt",),
                           onnxruntime_from="image", tf32_switch="accelerator",
                           help="Triton's onnxruntime backend (NVIDIA's Triton container)"),
    # Triton's openvino backend (openvino_backend README): IR as model.xml + model.bin, parameters INFERENCE_NUM_THREADS
    # and HINT_BF16 (YES only: it cannot ask OpenVINO for f32, which OpenVINO's CPU plugin does not default to where the
    # CPU has native bf16); x86 -py3 images carry it (server build.py: the standalone OpenVINO per release)
    "openvino": Backend("openvino", "model.xml", "openvino", backend="openvino", device="cpu",
                        default_artifact="openvino-bf16", thread_parameter="INFERENCE_NUM_THREADS",
                        image_openvino=True, export_flag="--openvino",
                        # one stream, as export measured it; HINT_BF16 where the artifact was checked in bf16
                        fixed_parameters=(("PERFORMANCE_HINT", "LATENCY"), ("NUM_STREAMS", 1)),
                        bf16_parameter=("HINT_BF16", "YES"),
                        help="Triton's openvino backend (NVIDIA's Triton container, x86): an IR from --openvino"),
    "tensorrt": Backend("tensorrt", "model.plan", "tensorrt", platform="tensorrt_plan", device="gpu",
                        default_artifact="tensorrt-fp16", engine=True, tf32_switch="env", export_flag="--trt",
                        help="Triton's tensorrt backend: an engine from --trt"),
}
SERVE_DEVICES = ("cpu", "gpu")  # where a model step's instances run (Triton's KIND_CPU / KIND_GPU)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def native_backend_of(runtime: str) -> Backend | None:
    """The native backend whose own runtime an artifact's `runtime` is (None: none has it as its own)."""
    return next((b for b in BACKENDS.values() if b.runtime == runtime and not b.python_model), None)


def backends_help() -> str:
    return "; ".join(f"{b.name}: {b.help}" for b in BACKENDS.values())


class RepositoryError(TftError):
    """The model repository cannot be built from this export with these options."""


# -- what a launcher of Triton owes a build: one place, read by `serve start`, the pipeline's and verify's servers,
# the Dockerfile's CMD (the same flag), the Helm values and KServe ------------------------------------------------
# Triton's tensorrt backend runs a version-compatible engine only when started with this (tensorrt_backend README)
VERSION_COMPATIBLE_FLAG = "--backend-config=tensorrt,version-compatible=true"
READY_SECONDS = 120  # loading a repository of ONNX graphs and Python steps
# ONNX Runtime's TensorRT provider builds its engines in the model's warm-up, before Triton calls the model ready: a
# BERT-base takes minutes, per shape profile
WARMUP_READY_SECONDS = 900


def launch_flags(records) -> list[str]:
    """tritonserver flags the builds (one record, or several) need beyond the defaults."""
    records = [records] if isinstance(records, dict) else list(records)
    return [VERSION_COMPATIBLE_FLAG] if any(r.get("version_compatible") for r in records) else []


def launch_env(records) -> dict[str, str]:
    """The environment the builds ask of the server's process or container (their `container_env`)."""
    records = [records] if isinstance(records, dict) else list(records)
    out: dict[str, str] = {}
    for record in records:
        out.update(record.get("container_env") or {})
    return out


def ready_budget(records) -> int:
    """Seconds a launcher waits for the builds to load: longer where a warm-up builds TensorRT engines."""
    records = [records] if isinstance(records, dict) else list(records)
    return WARMUP_READY_SECONDS if any(r.get("ort_tensorrt") for r in records) else READY_SECONDS


# TF32: on Ampere and newer the CUDA libraries compute fp32 matrix products in TF32 unless told not to, and served
# fp32 answers then drift past export's 1e-4 parity. The onnxruntime backend passes a `cuda` accelerator's parameters
# to ONNX Runtime's CUDA provider (onnxruntime_backend README, "ONNX Runtime with CUDA Execution Provider
# optimization"), `use_tf32` among them (the CUDA provider's option, onnxruntime cuda_execution_provider_info) from
# r24.06; elsewhere, and under TensorRT (no TF32 switch in ONNX Runtime's TensorRT provider), the container's
# NVIDIA_TF32_OVERRIDE=0 does it.
CUDA_ACCELERATOR_USE_TF32_FROM = "24.06"


def tf32_off(backend: Backend, gpu: bool, ort_tensorrt: bool, precision: str, release: str) -> tuple[dict, dict]:
    """(the `cuda` accelerator's parameters, the container's environment) that keep an fp32 artifact in fp32 on the
    GPU; both empty where nothing needs turning off (the CPU, fp16, or a backend without CUDA)."""
    if not gpu or precision != "fp32" or not backend.tf32_switch:
        return {}, {}
    if backend.tf32_switch == "accelerator" and not ort_tensorrt and release >= CUDA_ACCELERATOR_USE_TF32_FROM:
        return {"use_tf32": "0"}, {}
    return {}, {"NVIDIA_TF32_OVERRIDE": "0"}
