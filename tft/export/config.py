"""Declarative ONNX export configs per model family, and the dummy inputs that drive tracing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tft.errors import TftError

# Encoder families known to export and fuse with ONNX Runtime's transformer optimizer.
# value: (ORT optimizer model_type, accepts token_type_ids)
FAMILIES = {
    "bert": ("bert", True),
    "roberta": ("bert", False),
    "xlm-roberta": ("bert", False),
    "distilbert": ("bert", False),
    "albert": ("bert", True),
    "electra": ("bert", True),
    "ernie": ("bert", True),
    "megatron-bert": ("bert", True),
}


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
    def optimizer_type(self) -> str | None:
        return FAMILIES.get(self.model_type, (None,))[0]

    def dynamic_axes(self) -> dict:
        axes = {name: {0: "batch", 1: "sequence"} for name in self.inputs}
        axes[self.output] = {0: "batch", 1: "sequence"} if self.token_task else {0: "batch"}
        return axes

    def output_shape(self) -> list:
        return ["batch", "sequence", self.num_labels] if self.token_task else ["batch", self.num_labels]


def onnx_config_for(manifest: dict, hf_config, opset: int = 17) -> OnnxConfig:
    model_type = hf_config.model_type
    wanted = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in manifest["model_input_names"]]
    if model_type in FAMILIES and not FAMILIES[model_type][1]:
        wanted = [n for n in wanted if n != "token_type_ids"]
    if "input_ids" not in wanted or "attention_mask" not in wanted:
        raise ExportError(f"model inputs {wanted} lack input_ids/attention_mask; tft exports encoder models")
    if opset < 17:
        raise ExportError("--opset must be 17 or newer (LayerNormalization as one op)")
    return OnnxConfig(model_type, tuple(wanted), manifest["kind"] == "token_classification",
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
