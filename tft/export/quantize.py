"""int8 and fp16 variants of an fp32 ONNX graph.

Two int8 recipes:
- `int8` (dynamic, ONNX Runtime on CPUs): int8 weights per channel; activation scales computed per
  batch at run time. Fast, no calibration, but an answer can depend on which texts share its batch
  (scales follow the batch): export measures how often (batch invariance).
- `int8-static` (Q/DQ): activation scales fixed by calibration on training texts, so answers never
  follow the batch. Only MatMuls by a weight are quantized; embeddings, LayerNorm, Softmax,
  attention scores and the classifier stay fp32. This is the graph TensorRT's explicit quantization
  reads; on ONNX Runtime's CPU kernels it measured slower than fp32 and less accurate than dynamic
  int8 on SST-2 MiniLM (docs/benchmarks.md), so pipelines do not offer it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def _without_value_info(src: Path, dst: Path) -> Path:
    # dynamo graphs carry value_info that trips the quantizer's shape inference
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    tmp = Path(dst).with_suffix(".prequant.onnx")
    onnx.save(model, str(tmp))
    return tmp


def quantize_int8(src: Path, dst: Path, *, per_channel: bool = True, keep_fp32=lambda name: False) -> Path:
    """QInt8 weights (per output channel) of the MatMuls and embedding tables, dynamic activation
    quantization; run on the un-fused fp32 graph. `keep_fp32(node name)` leaves chosen MatMuls in fp32.
    Per-channel weights measured better agreement, batch invariance and accuracy than per-tensor on
    SST-2 MiniLM, at the same speed (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _without_value_info(src, dst)
    try:
        graph = onnx.load(str(tmp))
        exclude = [n.name for n in graph.graph.node if n.op_type == "MatMul" and keep_fp32(n.name)]
        # the embedding tables (Gather) are quantized too: a quarter of the size, no effect on speed
        quantize_dynamic(str(tmp), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         nodes_to_exclude=exclude, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        tmp.unlink(missing_ok=True)
    return Path(dst)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls that multiply by a constant weight: the projections and feed-forward layers. Attention's
    score and context MatMuls (two activations) stay fp32: their ranges vary most from text to text."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in constants]


def classifier_nodes(model: onnx.ModelProto) -> list[str]:
    """The MatMul/Gemm nodes after the encoder's last LayerNormalization: the pooler and the
    classifier, which decide the answer from few, wide-ranged values and lose most from int8."""
    nodes = list(model.graph.node)
    last_norm = max((i for i, n in enumerate(nodes) if n.op_type in ("LayerNormalization", "SkipLayerNormalization")),
                    default=-1)
    return [n.name for n in nodes[last_norm + 1:] if n.op_type in ("MatMul", "Gemm")]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over padded batches of real training inputs."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - called by some calibrators only
        pass


def quantize_int8_static(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]],
                         method: str = "minmax", per_channel: bool = True, all_matmuls: bool = False) -> Path:
    """Q/DQ int8: symmetric weights (per channel by default), activation scales from `calibration`
    (batches of training inputs padded to one width), weight MatMuls of the encoder only (`all_matmuls`:
    attention's score and context MatMuls and the classifier too, for comparison)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("static int8 needs calibration inputs")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    tmp = _without_value_info(src, dst)
    try:
        graph = onnx.load(str(tmp))
        quantize_static(str(tmp), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=None if all_matmuls else weight_matmuls(graph),
                        nodes_to_exclude=None if all_matmuls else classifier_nodes(graph),
                        calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibMovingAverage": method == "minmax"})
    finally:
        tmp.unlink(missing_ok=True)  # ONNX Runtime calibrates in a temporary folder of its own
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
