"""int8 (dynamic quantization, for CPU) and fp16 (for GPU) variants of an fp32 ONNX graph."""

from __future__ import annotations

from pathlib import Path

import onnx


def quantize_int8(src: Path, dst: Path) -> Path:
    """QInt8 weights, dynamic activation quantization; run on the un-fused fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    # dynamo graphs carry value_info that trips the quantizer's shape inference
    del model.graph.value_info[:]
    tmp = Path(dst).with_suffix(".prequant.onnx")
    onnx.save(model, str(tmp))
    try:
        quantize_dynamic(str(tmp), str(dst), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        tmp.unlink(missing_ok=True)
    return Path(dst)


def convert_fp16(src: Path, dst: Path, keep_fp32) -> Path:
    """fp16 with `keep_fp32` ops (numerically sensitive reductions: LayerNorm statistics, softmax
    exponentials) left in fp32; the family's config says which."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True,
                                    op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32)))
    onnx.save(half, str(dst))
    return Path(dst)
