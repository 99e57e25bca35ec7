"""OpenVINO artifacts of an export: the fp32 graph as OpenVINO IR, served in fp32 or (where the CPU has native bfloat16)
in bf16, and an int8 IR quantized by NNCF on training texts.

bf16 is not a file of its own: it is OpenVINO's inference-precision setting (`INFERENCE_PRECISION_HINT`) applied to the
fp32 IR, so `openvino-bf16` names the same model.xml with `inference_precision: bf16`. OpenVINO's CPU plugin *defaults*
to bf16 on CPUs with AVX512_BF16 or AMX (its `INFERENCE_PRECISION_HINT` reads bf16 there), so every runner here sets
the precision its artifact was checked in, explicitly.

int8: NNCF's post-training quantization (`nncf.quantize`, model type TRANSFORMER) with the feed-forward down
projections (each layer's intermediate -> hidden MatMul) left unquantized: measured on the MiniLM-L6 SST-2 checkpoint
(872 dev sentences, serving batches), NNCF's default recipe agreed with fp32 on 98.39% of answers, the same with those
six MatMuls kept 99.66% (docs/benchmarks.md, `benchmarks/cpu_engines.py`). They are found by their weights' shape, not
by name, so the rule holds for any encoder family.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tft.export.config import ExportError

log = logging.getLogger("tft")
# what `tft export --openvino` writes, and how each is run: (name, precision, file, inference precision)
IR_FILE, INT8_IR_FILE = "model.xml", "model.int8.xml"
INT8_RECIPE = "nncf-transformer, feed-forward down projections kept"


def weights_file(xml_name: str) -> str:
    """An IR's weights sit beside its XML under the same stem (OpenVINO's save_model and Triton's backend expect it)."""
    return str(Path(xml_name).with_suffix(".bin"))


def require(what: str = "OpenVINO artifacts"):
    """The openvino module, or one line saying how to get it."""
    try:
        import openvino
    except ImportError:
        raise ExportError(f"{what} need OpenVINO: pip install 'tft-toolchain[openvino]'") from None
    return openvino


def write_ir(onnx_path: Path, xml_path: Path) -> Path:
    """The ONNX graph converted to OpenVINO IR, weights kept in fp32 (save_model compresses them to fp16 unless told
    not to, which would change every answer)."""
    ov = require()
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def down_projections(model) -> list[str]:
    """The feed-forward down projections of an encoder: MatMuls whose constant weight reduces the widest dimension
    (intermediate size) to a narrower one. Named by their friendly names, as NNCF's IgnoredScope takes them."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight = _constant_shape(op.input_value(1).get_node())
        if weight is None or len(weight) != 2:
            continue
        transpose_b = bool(op.get_attributes().get("transpose_b", False))
        reduced, produced = (weight[1], weight[0]) if transpose_b else (weight[0], weight[1])
        found.append((reduced, produced, op.get_friendly_name()))
    if not found:
        return []
    widest = max(r for r, _, _ in found)
    return [name for reduced, produced, name in found if reduced == widest and produced < reduced]


def _constant_shape(node):
    """The shape of a weight constant, through the Convert/decompression nodes that may sit in front of it."""
    for _ in range(4):
        if node.get_type_name() == "Constant":
            return list(node.get_output_shape(0))
        if node.get_type_name() not in ("Convert", "Multiply", "Subtract", "Reshape") or not node.inputs():
            return None
        node = node.input_value(0).get_node()
    return None


def quantize_int8(xml_path: Path, out_xml: Path, calibration: list[dict]) -> tuple[Path, dict]:
    """NNCF post-training int8 of the fp32 IR on `calibration` (one training input per item): activation scales fixed
    once (static, so a row's answer never follows its batch), the down projections kept. -> (the IR, its recipe)."""
    ov = require("--openvino-int8")
    try:
        import nncf
    except ImportError:
        raise ExportError("--openvino-int8 needs NNCF: pip install 'tft-toolchain[openvino]'") from None
    if not calibration:
        raise ExportError("--openvino-int8: no training examples to calibrate on")
    from tft.onnx_trace import library_output_to_log

    model = ov.Core().read_model(str(xml_path))
    kept = down_projections(model)
    with library_output_to_log("nncf"):
        quantized = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration),
                                  ignored_scope=nncf.IgnoredScope(names=kept, validate=False) if kept else None)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return Path(out_xml), {"recipe": INT8_RECIPE, "kept_in_float": len(kept), "calibration_samples": len(calibration),
                           "activation_scales": "static", "nncf": nncf.__version__}
