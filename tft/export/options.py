"""`tft export` options: one typed table (flags, YAML keys, `--help`, checks) in the way of `tft.options`;
`tft pipeline` composes it with the training and serving options."""

from __future__ import annotations

from dataclasses import dataclass

from tft.inference import ORT_DEVICES
from tft.options import Options, Rule

# the parity gate's default thresholds per precision (tft/export/parity.py compares against them)
# bf16 keeps 8 bits of mantissa: logits move by ~1e-2, so it is judged like int8, by answers, never by tolerance
THRESHOLDS = {"fp32": {"atol": 1e-4}, "fp16": {"atol": 1e-2},
              "int8": {"min_agreement": 0.99, "max_metric_drop": 0.01},
              "bf16": {"min_agreement": 0.99, "max_metric_drop": 0.01}}
# an artifact of these precisions offered as a candidate (the pipeline) may fail its gate: it is set aside, not fatal
CANDIDATE_PRECISIONS = ("int8", "bf16")


@dataclass(frozen=True)
class ExportConfig:
    output_dir: str | None = None  # default: exports/<run name>
    int8: bool = False
    int8_static: bool = False
    calibration_samples: int = 256
    fp16: bool = False
    openvino: bool = False
    openvino_int8: bool = False
    trt: bool = False
    opset: int = 17
    exporter: str = "torchscript"
    max_batch: int = 64
    max_seq_length: int | None = None  # default: the checkpoint's
    opt_batch: int | None = None  # default: min(8, max batch)
    opt_seq_length: int | None = None  # default: min(max, 128)
    parity_samples: int = 512
    parity_data: str | None = None
    atol_fp32: float | None = None
    atol_fp16: float | None = None
    int8_min_agreement: float | None = None
    int8_max_metric_drop: float | None = None
    int8_min_batch_invariance: float | None = None
    device: str = "auto"
    trt_version_compatible: bool = False
    trt_hardware_compatible: bool = False
    optimize: bool = True
    overwrite: bool = False
    wait: bool = False  # another command writing the same folder: wait for it instead of refusing
    optional_candidates: bool = False  # an int8 or bf16 artifact failing its gate is set aside (the pipeline), not fatal

    def thresholds(self) -> dict[str, dict]:
        """The parity thresholds per precision: the defaults with the options given."""
        out = {k: dict(v) for k, v in THRESHOLDS.items()}
        overrides = {("fp32", "atol"): self.atol_fp32, ("fp16", "atol"): self.atol_fp16,
                     ("int8", "min_agreement"): self.int8_min_agreement,
                     ("int8", "max_metric_drop"): self.int8_max_metric_drop,
                     ("int8", "min_batch_invariance"): self.int8_min_batch_invariance}
        for (precision, key), value in overrides.items():
            if value is not None:
                out[precision][key] = value
        return out


RULES = {
    "output_dir": Rule(str, "Default: exports/<run name>.", metavar="DIRECTORY"),
    "int8": Rule(bool, "Also write a dynamically quantized int8 ONNX model (CPU).", flag=True),
    "int8_static": Rule(bool, "Also write a static Q/DQ int8 ONNX model calibrated on training texts (CPU; "
                              "batch-invariant).", flag=True),
    "calibration_samples": Rule(int, "Training examples that fix the activation scales of --int8-static and "
                                      "--openvino-int8.", low=1),
    "fp16": Rule(bool, "Also write an fp16 ONNX model (GPU; LayerNorm/Softmax kept fp32).", flag=True),
    "openvino": Rule(bool, "Also write OpenVINO IR (CPU): fp32, and bf16 where the CPU has AVX512_BF16 or AMX "
                           "(tft-toolchain[openvino]).", flag=True),
    "openvino_int8": Rule(bool, "Also write an OpenVINO int8 IR, quantized by NNCF on training texts (static "
                                "activation scales: batch-invariant).", flag=True),
    "trt": Rule(bool, "Also build a TensorRT fp16 engine (NVIDIA GPU + tft-toolchain[trt]; TensorRT 10 or 11).", flag=True),
    "opset": Rule(int, "ONNX opset (17+ keeps LayerNormalization whole).", low=17, high=23),
    "exporter": Rule(str, "PyTorch ONNX exporter; torchscript fuses fully in ONNX Runtime.",
                     choices=("torchscript", "dynamo")),
    "max_batch": Rule(int, "Largest batch served (parity and TensorRT profile).", low=1, high=4096),
    "max_seq_length": Rule(int, "Longest sequence served.  [default: the checkpoint's]", low=1, high=8192),
    "opt_batch": Rule(int, "TensorRT profile: batch size to optimize for.  [default: min(8, max batch)]", low=1,
                      high=4096),
    "opt_seq_length": Rule(int, "TensorRT profile: sequence length to optimize for.  [default: min(max, 128)]", low=1,
                           high=8192),
    "parity_samples": Rule(int, "Dev examples compared against PyTorch.", low=1),
    "parity_data": Rule(str, "Compare on this file (task format) instead of dev.", metavar="FILE"),
    "atol_fp32": Rule(float, "fp32 max |logit diff|.  [default: 1e-4]", low=0),
    "atol_fp16": Rule(float, "fp16 max |logit diff|.  [default: 1e-2]", low=0),
    "int8_min_agreement": Rule(float, "int8: least prediction agreement.  [default: 0.99]", low=0, high=1),
    "int8_max_metric_drop": Rule(float, "int8: largest dev metric drop (fraction).  [default: 0.01]", low=0, high=1),
    "int8_min_batch_invariance": Rule(float, "int8: least fraction of dev answers unchanged between batch 1 and "
                                             "serving batches.  [default: off]", low=0, high=1),
    "device": Rule(str, "ONNX Runtime device of the parity gate (auto: CUDA when onnxruntime-gpu offers it).",
                   choices=ORT_DEVICES),
    "trt_version_compatible": Rule(bool, "Build the engine version-compatible (loads on later TensorRT releases; "
                                         "slower to start).", flag=True),
    "trt_hardware_compatible": Rule(bool, "Build the engine for any Ampere or newer GPU (TensorRT's AMPERE_PLUS), "
                                          "not only GPUs like this one; slower, and built on an Ampere+ GPU.", flag=True),
    "overwrite": Rule(bool, "Replace an earlier export in --output-dir (never a folder of other files).", flag=True),
    "wait": Rule(bool, "If another command is writing --output-dir, wait for it instead of stopping.", flag=True),
}

EXPORT = Options(ExportConfig, RULES, click_types=True)
