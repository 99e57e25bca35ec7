"""`tft serve build` options: one typed table (flags, YAML keys, `--help`, checks) in the way of
`tft.options`; `tft pipeline` composes it with the training and export options."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from tft.options import Options, Rule
from tft.serve.backends import BACKENDS, NAME_RE, SERVE_DEVICES, RepositoryError, backend_names, backends_help


@dataclass(frozen=True)
class BuildOptions:
    name: str | None = None  # the served ensemble; None: the task's name
    backend: str = "python"
    max_batch: int | None = None  # None: the export's max batch
    instances: int = 1
    queue_delay_us: int = 2000
    dynamic_batching: bool = True
    artifact: str | None = None  # export artifact for the model step (default: fp32); "auto": the fastest that passed
    threads: int = 0  # ONNX Runtime intra-op threads per instance (0: its default)
    max_chars: int = 0  # cap per text before tokenizing (0: the export's, or 32 x max_seq_length, at least 4096)
    windows: bool = True  # NER: texts longer than the model reads go in overlapping windows (backends that read them)
    device: str | None = None  # cpu | gpu; None: gpu for tensorrt, cpu otherwise
    ort_tensorrt: bool = False  # onnxruntime on GPUs: TensorRT as its execution accelerator
    ort_tensorrt_workspace: int = 1 << 30
    ort_tensorrt_cache: str = "/tmp/tft-ort-trt-cache"  # engine cache inside the server's container
    tensorrt_version: str | None = None  # the serving container's TensorRT: a TensorRT engine must match it
    triton_image: str | None = None  # the Triton image that will serve it (its TensorRT is looked up)
    gpu_capability: str | None = None  # the serving GPU's compute capability: a TensorRT engine must run there
    wait: bool = False  # another command writing the repository: wait for it instead of refusing

    @property
    def gpu(self) -> bool:
        return (self.device or ("gpu" if BACKENDS[self.backend].device == "gpu" else "cpu")) == "gpu"

    def for_export(self, manifest: dict) -> "BuildOptions":
        """Defaults that come from the export: the name (its task) and the max batch."""
        return dataclasses.replace(self, name=self.name or manifest["task"],
                                   max_batch=self.max_batch or manifest["max_batch"])


RULES = {
    "name": Rule(str, "Name of the served (ensemble) model. Default: the task name."),
    "backend": Rule(str, f"Triton backend of the model step: {backends_help()}.", choices=backend_names),
    "artifact": Rule(str, "Export artifact to serve (fp32, fp32-optimized, int8, int8-static, fp16, tensorrt-fp16), "
                          "or auto: the fastest one export measured whose gate passed and whose answers do not depend "
                          "on their batch. Default: fp32, or tensorrt-fp16 with --backend tensorrt."),
    "max_batch": Rule(int, "max_batch_size of every model. Default: the export's max batch.", low=1, high=4096),
    "instances": Rule(int, "Instances of each model.", low=1, high=256),
    "queue_delay_us": Rule(int, "Dynamic batcher: how long a request may wait for others to batch with.", low=0,
                           high=10_000_000),
    "dynamic_batching": Rule(bool, "Batch requests that arrive together (--no-dynamic-batching: each as it comes, "
                                   "for comparison)."),
    "threads": Rule(int, "ONNX Runtime threads per model instance (0: its default).", low=0, high=1024),
    "max_chars": Rule(int, "Cap on characters per text, applied before tokenizing.  [default: the export's, or 32 x "
                           "max_seq_length, >= 4096]", low=0),
    "windows": Rule(bool, "NER: read a text longer than the model reads in overlapping windows and merge them, as "
                          "`tft predict` does (the python backend; native backends cut it, answers marked truncated); "
                          "--no-windows cuts it everywhere."),
    "device": Rule(str, "Where the model step runs: gpu puts onnxruntime/tensorrt instances on GPUs (KIND_GPU). "
                        "Default: gpu for tensorrt, cpu otherwise.", choices=SERVE_DEVICES),
    "ort_tensorrt": Rule(bool, "With --backend onnxruntime --device gpu: TensorRT as ONNX Runtime's accelerator "
                               "(FP16, engine cache), per the onnxruntime_backend README.", flag=True),
    "tensorrt_version": Rule(str, "With --backend tensorrt: the serving container's TensorRT (docker run IMAGE python3 "
                                  "-c 'import tensorrt; print(tensorrt.__version__)'); a mismatched engine is refused.",
                             metavar="X.Y.Z"),
    "triton_image": Rule(str, "The Triton image that will serve it (YY.MM-py3, 24.05-py3 and later: tft's table of "
                              "NVIDIA's releases): its Python packages are chosen for that image's Python, and a graph "
                              "fused by another ONNX Runtime is not served there.", metavar="TAG"),
    "gpu_capability": Rule(str, "With --backend tensorrt: the serving GPU's compute capability (8.0 A100, 8.6 A10, 8.9 "
                                "L4, 9.0 H100); an engine built on another GPU is refused unless built with "
                                "--trt-hardware-compatible (then any 8.0 or newer).", metavar="X.Y"),
    "wait": Rule(bool, "If another command is writing --repository, wait for it instead of stopping.", flag=True),
}


def check(opts: BuildOptions) -> None:
    """Rules between options, before anything is read or written (one line each)."""
    if opts.name is not None and not NAME_RE.match(opts.name):
        raise RepositoryError(f"--name {opts.name!r}: use letters, digits, '_', '-' and '.'")
    if opts.backend not in BACKENDS:
        raise RepositoryError(f"--backend {opts.backend!r}: choose one of {', '.join(BACKENDS)}")
    if opts.instances < 1:
        raise RepositoryError("--instances must be at least 1")
    if opts.device not in (None, *SERVE_DEVICES):
        raise RepositoryError(f"--device {opts.device!r}: choose one of {', '.join(SERVE_DEVICES)}")
    backend = BACKENDS[opts.backend]
    if opts.gpu and not backend.runs_on("gpu"):
        raise RepositoryError(f"--device gpu: the {opts.backend} backend runs on the CPU; use --backend onnxruntime "
                              "or tensorrt for GPUs")
    if not opts.gpu and not backend.runs_on("cpu"):
        raise RepositoryError(f"--backend {opts.backend} runs on GPUs only: drop --device cpu")
    if opts.gpu_capability is not None:
        parse_capability(opts.gpu_capability)  # a typo is one line before any work
        if not backend.engine:
            raise RepositoryError("--gpu-capability checks a TensorRT engine: it needs --backend tensorrt")
    if opts.ort_tensorrt and not ("tensorrt" in backend.accelerators and opts.gpu):
        raise RepositoryError("--ort-tensorrt is ONNX Runtime's TensorRT accelerator: it needs --backend onnxruntime "
                              "--device gpu")


def parse_capability(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise RepositoryError(f"--gpu-capability {text!r}: give the serving GPU's compute capability as MAJOR.MINOR, "
                              "such as 8.0 (A100), 8.6 (A10), 8.9 (L4) or 9.0 (H100)")
    return int(match.group(1)), int(match.group(2))


BUILD = Options(BuildOptions, RULES, check, click_types=True)
