"""PyTorch -> ONNX with one interface over both exporters.

`torchscript` (default): `torch.onnx.export(dynamo=False)` with eager attention; one self-contained
file, and the only graph ONNX Runtime's BERT optimizer fuses fully (Attention, EmbedLayerNorm,
SkipLayerNorm, BiasGelu). It is deprecated upstream, hence `dynamo` beside it behind the same call.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from tft.export.config import ExportError, OnnxConfig, dummy_inputs
from tft.tasks import kind_of

log = logging.getLogger("tft")
EXPORTERS = ("torchscript", "dynamo")


class LogitsOnly(torch.nn.Module):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits, positional for tracing."""

    def __init__(self, model, inputs):
        super().__init__()
        self.model = model
        self.inputs = inputs

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs).logits


def load_for_export(checkpoint: Path, kind: str):
    from tft.heads import load_trained

    # eager attention traces to plain MatMul/Softmax, which the ORT optimizer fuses and TensorRT parses
    return load_trained(checkpoint, kind_of(kind), attn_implementation="eager")


def export_onnx(model, cfg: OnnxConfig, path: Path, exporter: str = "torchscript") -> Path:
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    wrapper = LogitsOnly(model, cfg.inputs).eval()
    dummy = dummy_inputs(cfg, vocab_size=model.config.vocab_size)
    args = tuple(dummy[name] for name in cfg.inputs)
    path = Path(path)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(wrapper, args, str(path), input_names=list(cfg.inputs), output_names=[cfg.output],
                              dynamic_axes=cfg.dynamic_axes(), opset_version=cfg.opset, dynamo=False,
                              do_constant_folding=True)
        else:
            batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=8192)
            shapes = tuple({0: batch, 1: seq} for _ in cfg.inputs)
            program = torch.onnx.export(wrapper, args, input_names=list(cfg.inputs), output_names=[cfg.output],
                                        dynamic_shapes=shapes, opset_version=cfg.opset, dynamo=True, verbose=False)
            program.save(str(path), external_data=False)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path}: onnx.checker rejected the exported graph: {str(e).splitlines()[0]}") from None
    return path


def optimize_onnx(src: Path, dst: Path, cfg: OnnxConfig, hf_config) -> dict | None:
    """ORT transformer optimizer (fusions); None where the family is not one it knows."""
    if cfg.optimizer_type is None:
        log.warning("no ONNX Runtime fusion recipe for model type '%s'; skipping the optimized graph", cfg.model_type)
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type=cfg.optimizer_type, num_heads=hf_config.num_attention_heads,
                         hidden_size=hf_config.hidden_size, opt_level=1, use_gpu=False)
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
