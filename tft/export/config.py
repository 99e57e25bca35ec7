"""Declarative ONNX export configs per model family, and the dummy inputs that drive tracing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tft.errors import TftError
from tft.families import Family, family_of, input_names
from tft.onnx_trace import dynamic_axes
from tft.tasks import kind_of

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
        return family_of(self.model_type, quiet=True)

    @property
    def optimizer_type(self) -> str | None:
        return self.family.optimizer_type

    def dynamic_axes(self) -> dict:
        return dynamic_axes(self.inputs, self.token_task, self.output)

    def output_shape(self) -> list:
        return ["batch", "sequence", self.num_labels] if self.token_task else ["batch", self.num_labels]


def onnx_config_for(manifest: dict, hf_config, opset: int = 17) -> OnnxConfig:
    family = family_of(hf_config.model_type)
    wanted = input_names(family, manifest["model_input_names"])
    if "input_ids" not in wanted or "attention_mask" not in wanted:
        raise ExportError(f"model inputs {list(wanted)} lack input_ids/attention_mask; tft exports encoder models")
    if opset < max(17, family.min_opset):
        raise ExportError(f"--opset must be {max(17, family.min_opset)} or newer (LayerNormalization as one op"
                          f"{'' if family.min_opset <= 17 else ', and what ' + family.model_type + ' needs'})")
    return OnnxConfig(family.model_type, wanted, kind_of(manifest["kind"]).per_token, hf_config.num_labels, opset)


def dummy_inputs(cfg: OnnxConfig, batch: int = 2, seq: int = 16, vocab_size: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {"input_ids": torch.randint(5, max(6, vocab_size), (batch, seq), generator=g),
           "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    out["attention_mask"][-1, seq // 2:] = 0  # padding in the trace: masks must stay dynamic
    if "token_type_ids" in cfg.inputs:
        out["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long)
        out["token_type_ids"][:, seq // 2:] = 1
    return {k: out[k] for k in cfg.inputs}
