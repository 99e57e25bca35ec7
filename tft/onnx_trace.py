"""A model's logits traced to an ONNX graph: the one trace behind `tft export` and preflight's trial export.

Core (no stage): training's preflight proves, before any step, that what it is about to train can be exported, and
`tft export` writes the real artifacts, through the same call. torch is imported by the callers that trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

EXPORTERS = ("torchscript", "dynamo")


def logits_only(model, inputs: tuple[str, ...]):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits, positional for tracing."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and "token_type_ids" in inputs:
                kwargs["token_type_ids"] = token_type_ids
            return self.model(**kwargs).logits

    return LogitsOnly().eval()


def dynamic_axes(inputs: tuple[str, ...], per_token: bool, output: str = "logits") -> dict:
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes[output] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    return axes


@contextlib.contextmanager
def library_output_to_log(library: str = "onnx_exporter"):
    """What a library prints to the process's stdout/stderr goes to the libraries' log (root logger) instead: the
    TorchScript exporter prints its whole IR graph when an operator has no ONNX symbolic, NNCF a progress bar and a
    line per layer (thousands of lines in front of the user's one)."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                logging.getLogger(library).warning("%s output:\n%s", library, text[-20000:])


def trace(model, inputs: tuple[str, ...], args: tuple, path: Path, opset: int, per_token: bool,
          exporter: str = "torchscript", output: str = "logits") -> Path:
    """Write `model`'s logits as an ONNX graph with dynamic batch and sequence axes. Errors are the exporter's own:
    callers say in one line what they mean for the user."""
    import torch

    wrapper = logits_only(model, inputs)
    path = Path(path)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), library_output_to_log():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(wrapper, args, str(path), input_names=list(inputs), output_names=[output],
                              dynamic_axes=dynamic_axes(inputs, per_token, output), opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        else:
            batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=8192)
            shapes = tuple({0: batch, 1: seq} for _ in inputs)
            program = torch.onnx.export(wrapper, args, input_names=list(inputs), output_names=[output],
                                        dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False)
            program.save(str(path), external_data=False)
    return path
