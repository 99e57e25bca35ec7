"""The runtimes of an export's artifacts (ONNX Runtime, OpenVINO) as plain callables `batch -> logits`, and an export
folder answering raw items: `tft predict --export`, the parity gate, verify's offline side and benchmarks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tft.errors import TftError
from tft.inference import ORT_DEVICES as DEVICES
from tft.inference import TextSettings, answer_items
from tft.manifest import check_file, default_artifact, read_export_manifest


def providers_for(device: str | None, available: list[str], cache_dir: Path | None = None,
                  precision: str = "fp32") -> list:
    """ONNX Runtime execution providers for --device: auto (CUDA when this ONNX Runtime offers it), cpu,
    cuda, or tensorrt (TensorRT's provider with an engine cache, CUDA and CPU behind it).

    An fp32 artifact runs in fp32: the CUDA provider computes fp32 MatMuls in TF32 on Ampere and newer unless
    told not to (its `use_tf32` option, default on, onnxruntime/core/providers/cuda/cuda_execution_provider_info),
    which misses the 1e-4 parity tolerance; TensorRT's provider gets fp16 for fp16 artifacts only."""
    device = device or "auto"
    if device not in DEVICES:
        raise TftError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = "CUDAExecutionProvider" if device == "cuda" else "TensorrtExecutionProvider"
    if wanted not in available:
        raise TftError(f"--device {device}: this ONNX Runtime offers {', '.join(available)}, not {wanted}; "
                       "install onnxruntime-gpu (pip install 'tft-toolchain[gpu]') on a machine with an NVIDIA GPU")
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0"}) if precision == "fp32" else "CUDAExecutionProvider"
    chain: list = [cuda, "CPUExecutionProvider"]
    if device == "tensorrt":
        from tft.fsutil import cache_root

        options = {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache_dir or cache_root() / "ort-trt")}
        chain.insert(0, ("TensorrtExecutionProvider", options))
    return chain


def tf32_off_environment(device: str | None, precision: str) -> dict[str, str]:
    """NVIDIA_TF32_OVERRIDE=0 where an fp32 artifact runs on TensorRT: TensorRT computes fp32 layers in TF32 on Ampere
    and newer by default and ONNX Runtime's TensorRT provider has no option against it; the variable, read when the
    CUDA libraries start, turns TF32 off in cuBLAS, cuDNN and TensorRT alike."""
    return {"NVIDIA_TF32_OVERRIDE": "0"} if device == "tensorrt" and precision == "fp32" else {}


def check_provider(path, requested: list, got: list[str]) -> None:
    """The provider asked for first is the one the session runs on: ONNX Runtime falls back to the CPU, silently,
    where the CUDA or TensorRT libraries cannot be loaded."""
    wanted = requested[0][0] if isinstance(requested[0], tuple) else requested[0]
    if wanted not in got:
        raise TftError(f"{path}: ONNX Runtime was asked for {wanted} and runs on {', '.join(got) or 'nothing'}: the "
                       "CUDA/cuDNN (or TensorRT) libraries it needs are missing or of another version (see ONNX "
                       "Runtime's CUDA requirements); install them, or use --device cpu")


class OrtModel:
    """An ONNX file in an ONNX Runtime session: padded int64 batch in, logits out."""

    def __init__(self, path: str | Path, threads: int | None = None, providers=None, device: str | None = "cpu",
                 precision: str = "fp32"):
        import onnxruntime as ort

        from tft.cpus import available_cpus

        options = ort.SessionOptions()
        # the CPUs this process is given (a pod's quota), not the machine's cores ONNX Runtime would count
        options.intra_op_num_threads = threads or available_cpus()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        import os

        for key, value in tf32_off_environment(device, precision).items():
            os.environ.setdefault(key, value)  # before the session starts the CUDA libraries
        providers = providers or providers_for(device, ort.get_available_providers(), precision=precision)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()
        check_provider(path, providers, self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict) -> np.ndarray:
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feed)[0]


class OvModel:
    """An OpenVINO IR compiled for the CPU: padded int64 batch in, logits out, in the inference precision its artifact
    was checked in (f32 or bf16: OpenVINO's CPU default is bf16 where the CPU has it, so it is always set)."""

    def __init__(self, path: str | Path, inference_precision: str = "f32", threads: int | None = None):
        from tft.cpus import available_cpus, bf16_native

        if inference_precision == "bf16" and not bf16_native():
            raise TftError(f"{path}: bf16 inference needs a CPU with AVX512_BF16 or AMX; this one has neither "
                           "(OpenVINO would emulate it, slower than fp32): serve its fp32 or int8 artifact")
        try:
            import openvino as ov
        except ImportError:
            raise TftError(f"{path}: an OpenVINO artifact needs OpenVINO: pip install 'tft-toolchain[openvino]'") \
                from None
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            # the CPUs this process is given (a pod's quota), not the machine's cores
            "INFERENCE_NUM_THREADS": int(threads or available_cpus())})
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.providers = ["OpenVINO CPU"]

    def __call__(self, batch: dict) -> np.ndarray:
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        return np.array(self.request.infer(feed)[0], dtype=np.float32)


# an artifact's `runtime` -> how it runs offline (a runtime not here, a TensorRT engine, runs only where it is served)
OFFLINE_RUNNERS = {
    "onnxruntime": lambda path, art, device, threads: OrtModel(path, threads=threads, device=device,
                                                               precision=art["precision"]),
    "openvino": lambda path, art, device, threads: OvModel(path, art.get("inference_precision", "f32"),
                                                           threads=threads),
}


def runs_offline(artifact: dict) -> bool:
    return artifact.get("runtime", "onnxruntime") in OFFLINE_RUNNERS


def runner_for(path: str | Path, artifact: dict, device: str | None = "cpu", threads: int | None = None):
    """The runtime an artifact was checked on, from its manifest entry (`runtime`, `precision`,
    `inference_precision`)."""
    if not runs_offline(artifact):
        raise TftError(f"{path}: a {artifact.get('runtime')} artifact runs where it is served (a TensorRT engine on its "
                       "GPU, through `tft verify`), not offline here; choose an ONNX or OpenVINO artifact")
    return OFFLINE_RUNNERS[artifact.get("runtime", "onnxruntime")](path, artifact, device, threads)


class ExportPredictor:
    """An export folder ready to answer raw items the way `tft predict --export` does, on the runtime of the chosen
    artifact (ONNX Runtime or OpenVINO)."""

    def __init__(self, export_dir, artifact: str | None = None, threads: int | None = None, device: str | None = "cpu"):
        from transformers import AutoTokenizer

        from tft.inference import task_of

        self.export_dir = Path(export_dir)
        self.manifest = read_export_manifest(self.export_dir)
        self.task = task_of(self.manifest["checkpoint_manifest"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.export_dir)
        art = default_artifact(self.manifest) if artifact is None else next(
            (a for a in self.manifest["artifacts"] if a["name"] == artifact), None)
        if art is None:
            names = ", ".join(a["name"] for a in self.manifest["artifacts"] if runs_offline(a))
            raise TftError(f"--artifact {artifact!r}: {self.export_dir} has {names}")
        self.artifact = art
        path = check_file(self.export_dir, art["file"], art.get("sha256"))
        if art.get("weights_file"):  # an IR's weights, checked like its graph
            check_file(self.export_dir, art["weights_file"], art.get("weights_sha256"))
        self.model = runner_for(path, art, device=device, threads=threads)
        self.settings = TextSettings.of(self.manifest)  # what the served tokenizer step reads from the same manifest

    def logits(self, feats: list[dict], batch_size: int = 64) -> list[np.ndarray]:
        from tft.predictions import pad_batch
        from tft.predictions import unpadded

        logits, left, per_token = [], self.tokenizer.padding_side == "left", self.settings.kind.per_token
        for start in range(0, len(feats), batch_size):
            chunk = feats[start:start + batch_size]
            out = self.model(pad_batch(chunk, self.model.input_names, self.tokenizer.pad_token_id or 0, left=left))
            logits += [unpadded(out[i], len(f["input_ids"]), left) if per_token else out[i]
                       for i, f in enumerate(chunk)]
        return logits

    def answer_items(self, items: list[dict], batch_size: int = 64) -> list[dict]:
        return answer_items(items, self.settings, self.tokenizer, lambda feats: self.logits(feats, batch_size),
                            self.manifest["labels"])


def predict_file(export_dir, input_path, output_path, batch_size: int = 64, device: str | None = "auto",
                 artifact: str | None = None, windows: bool = True) -> int:
    from tft.fsutil import atomic_write_text
    from tft.inference import read_inputs

    predictor = ExportPredictor(export_dir, artifact=artifact, device=device)
    predictor.settings = dataclasses.replace(predictor.settings, windows=windows)
    records = predictor.answer_items(read_inputs(input_path, predictor.task), batch_size)
    atomic_write_text(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)
