"""Declarative ONNX export configs per model family, and the dummy inputs that drive tracing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tft.errors import TftError
from tft.tasks import kind_of

@dataclass(frozen=True)
class Family:
    """What one encoder family needs at export, in the spirit of optimum's per-architecture configs."""

    optimizer_type: str | None = "bert"  # ONNX Runtime transformer optimizer model_type (None: no fusions)
    token_type_ids: bool = True  # its forward() takes token_type_ids
    fp16_keep_fp32: tuple[str, ...] = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


# Encoder families known to export and fuse with ONNX Runtime's transformer optimizer: a new one is an entry.
FAMILIES = {
    "bert": Family(),
    "roberta": Family(token_type_ids=False),
    "xlm-roberta": Family(token_type_ids=False),
    "distilbert": Family(token_type_ids=False),
    "albert": Family(),
    "electra": Family(),
    "ernie": Family(),
    "megatron-bert": Family(),
}
UNKNOWN_FAMILY = Family(optimizer_type=None)


class ExportError(TftError):
    """Export failed before any artifact was handed over."""


@dataclass(frozen=True)
class OnnxConfig:
    model_type: str
    inputs: tuple[str, ...]  # in forward() order
    token_task: bool
    num_labels: int
    opset: int = 17  # keeps LayerNormalization as one op (TensorRT fp16 accuracy)
    output: str = "logits"

    @property
    def family(self) -> Family:
        return FAMILIES.get(self.model_type, UNKNOWN_FAMILY)

    @property
    def optimizer_type(self) -> str | None:
        return self.family.optimizer_type

    def dynamic_axes(self) -> dict:
        axes = {name: {0: "batch", 1: "sequence"} for name in self.inputs}
        axes[self.output] = {0: "batch", 1: "sequence"} if self.token_task else {0: "batch"}
        return axes

    def output_shape(self) -> list:
        return ["batch", "sequence", self.num_labels] if self.token_task else ["batch", self.num_labels]


def onnx_config_for(manifest: dict, hf_config, opset: int = 17) -> OnnxConfig:
    model_type = hf_config.model_type
    wanted = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in manifest["model_input_names"]]
    if model_type in FAMILIES and not FAMILIES[model_type].token_type_ids:
        wanted = [n for n in wanted if n != "token_type_ids"]
    if "input_ids" not in wanted or "attention_mask" not in wanted:
        raise ExportError(f"model inputs {wanted} lack input_ids/attention_mask; tft exports encoder models")
    if opset < 17:
        raise ExportError("--opset must be 17 or newer (LayerNormalization as one op)")
    return OnnxConfig(model_type, tuple(wanted), kind_of(manifest["kind"]).per_token,
                      hf_config.num_labels, opset)


def dummy_inputs(cfg: OnnxConfig, batch: int = 2, seq: int = 16, vocab_size: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {"input_ids": torch.randint(5, max(6, vocab_size), (batch, seq), generator=g),
           "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    out["attention_mask"][-1, seq // 2:] = 0  # padding in the trace: masks must stay dynamic
    if "token_type_ids" in cfg.inputs:
        out["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long)
        out["token_type_ids"][:, seq // 2:] = 1
    return {k: out[k] for k in cfg.inputs}
