"""PyTorch -> ONNX with one interface over both exporters.

`torchscript` (default): `torch.onnx.export(dynamo=False)` with eager attention; one self-contained
file, and the only graph ONNX Runtime's BERT optimizer fuses fully (Attention, EmbedLayerNorm,
SkipLayerNorm, BiasGelu). It is deprecated upstream, hence `dynamo` beside it behind the same call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch

from tft.errors import first_line
from tft.export.config import ExportError, OnnxConfig, dummy_inputs
from tft.onnx_trace import EXPORTERS, trace
from tft.tasks import kind_of

log = logging.getLogger("tft")


def load_for_export(checkpoint: Path, kind: str):
    from tft.head_modules import load_trained

    # eager attention traces to plain MatMul/Softmax, which the ORT optimizer fuses and TensorRT parses
    return load_trained(checkpoint, kind_of(kind), attn_implementation="eager")


def export_onnx(model, cfg: OnnxConfig, path: Path, exporter: str = "torchscript") -> Path:
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    dummy = dummy_inputs(cfg, vocab_size=model.config.vocab_size)
    path = Path(path)
    try:
        trace(model, cfg.inputs, tuple(dummy[name] for name in cfg.inputs), path, cfg.opset, cfg.token_task, exporter)
    except (RuntimeError, TypeError, ValueError, NotImplementedError, torch.onnx.errors.OnnxExporterError) as e:
        # the model's own operators: a user's model, not a tft bug (preflight says this before training)
        raise ExportError(f"a {cfg.model_type} model cannot be exported to ONNX (opset {cfg.opset}, {exporter} "
                          f"exporter): {first_line(e)}; try --exporter "
                          f"{'dynamo' if exporter == 'torchscript' else 'torchscript'} or a newer --opset") from None
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
