"""int8 recipes side by side on one trained checkpoint: agreement with fp32 in serving batches, batch
invariance, the task metric, and ONNX Runtime throughput, all on the whole dev split in one run.

    python benchmarks/int8_variants.py --checkpoint runs/sst2-full/run/best --max-batch 32

Every variant is built from the same un-fused fp32 ONNX graph and measured by the export's own
parity code (`tft.export.parity.measure_serving`): dev rows in a shuffled order, cut into batches of
random sizes 1..max batch with mixed lengths (what Triton's dynamic batcher hands the model), each row
also run alone (batch 1). The reference is the fp32 ONNX graph.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def variants(quantize, fp32: Path, tmp: Path, calibration, quick: bool = False):
    """(name, description, builder) for each recipe tried."""
    yield "dynamic-per-tensor", "int8 weights per tensor, activation scales per batch (`int8` before this run)", \
        lambda: quantize.quantize_int8(fp32, tmp / "dynamic-pt.onnx", per_channel=False)
    yield "dynamic-per-channel", "as above, per-channel weights (`int8` now)", \
        lambda: quantize.quantize_int8(fp32, tmp / "dynamic-pc.onnx")
    ffn_out = lambda n: "/output/dense/" in n and "/attention/" not in n  # noqa: E731
    yield "dynamic-per-tensor-keep-ffn-output", "dynamic per-tensor, each layer's FFN output projection kept fp32", \
        lambda: quantize.quantize_int8(fp32, tmp / "dynamic-pt-ffn.onnx", per_channel=False, keep_fp32=ffn_out)
    yield "dynamic-per-channel-keep-ffn-output", "dynamic per-channel, FFN output projections kept fp32", \
        lambda: quantize.quantize_int8(fp32, tmp / "dynamic-pc-ffn.onnx", keep_fp32=ffn_out)
    last = lambda n: f"/layer.{_layers(fp32) - 1}/" in n  # noqa: E731
    yield "dynamic-per-channel-keep-last-layer", "dynamic per-channel, the last encoder layer kept fp32", \
        lambda: quantize.quantize_int8(fp32, tmp / "dynamic-last.onnx", keep_fp32=last)
    for method in ("minmax", "percentile", "entropy"):
        for per_channel in (False,) if quick else (True, False):
            name = f"static-{method}-{'per-channel' if per_channel else 'per-tensor'}"
            yield name, (f"Q/DQ, {method} calibration, symmetric, {'per-channel' if per_channel else 'per-tensor'} "
                         "weights, weight MatMuls only, classifier fp32"), \
                lambda m=method, pc=per_channel, n=name: quantize.quantize_int8_static(
                    fp32, tmp / f"{n}.onnx", calibration, m, pc)
    yield "static-all-matmuls", "Q/DQ MinMax per-channel on every MatMul (attention scores too)", \
        lambda: quantize.quantize_int8_static(fp32, tmp / "static-all.onnx", calibration, all_matmuls=True)


def _layers(path) -> int:
    import re

    import onnx

    found = {int(m.group(1)) for n in onnx.load(str(path)).graph.node for m in [re.search(r"/layer\.(\d+)/", n.name)] if m}
    return max(found) + 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--dev-samples", type=int, default=100_000)
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--only", default="", help="regular expression: measure only the variants it matches")
    p.add_argument("--json", default="benchmarks/results/int8_variants.json")
    args = p.parse_args()

    from transformers import AutoConfig, AutoTokenizer

    from tft.export import onnx_export, quantize
    from tft.export.config import onnx_config_for
    from tft.export.parity import measure_serving
    from tft.export.pipeline import calibration_inputs, parity_inputs
    from tft.export.runtime import OrtModel
    from tft.manifest import read_checkpoint_manifest
    from tft.metrics import compute_per_example
    from tft.tasks import kind_from

    ckpt = Path(args.checkpoint)
    cm = read_checkpoint_manifest(ckpt)
    hf_config = AutoConfig.from_pretrained(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    cfg = onnx_config_for(cm, hf_config, 17)
    max_len = cm["max_seq_length"]
    _, serving, _ = parity_inputs(cm, tokenizer, hf_config, args.max_batch, max_len, args.dev_samples, None)
    serving = [(lab, {k: v for k, v in b.items() if k in cfg.inputs}) for lab, b in serving]
    kind = kind_from(cm)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = onnx_export.load_for_export(ckpt, cm["kind"])
        fp32 = onnx_export.export_onnx(model, cfg, tmp / "model.onnx", "torchscript")
        reference = OrtModel(fp32)
        calibration = calibration_inputs(cm, tokenizer, max_len, args.calibration_samples, cfg.inputs)

        def measure(name, description, path, seconds=0.0):
            m = measure_serving(reference, OrtModel(path), serving, kind=kind)
            metric = compute_per_example(kind, tuple(cm["labels"]), m["logits"], m["gold"])[cm["main_metric"]]
            row = {"variant": name, "recipe": description, "agreement_with_fp32": m["serving_agreement"],
                   "batch_invariance": m["batch_invariance"], cm["main_metric"]: metric,
                   "rows_per_s": m["rows_per_s"], "latency_ms_p50": m["latency_ms_p50"],
                   "build_s": round(seconds, 1), "bytes": Path(path).stat().st_size}
            rows.append(row)
            print(json.dumps(row), flush=True)

        measure("fp32", "the exported fp32 graph (reference)", fp32)
        for name, description, build in variants(quantize, fp32, tmp, calibration):
            if args.only and not re.search(args.only, name):
                continue
            start = time.perf_counter()
            try:
                path = build()
            except Exception as e:  # noqa: BLE001 - a recipe that cannot be built is a result too
                rows.append({"variant": name, "recipe": description, "error": f"{type(e).__name__}: {e}"})
                print(rows[-1], flush=True)
                continue
            measure(name, description, path, time.perf_counter() - start)
    result = {"checkpoint": str(ckpt), "task": cm["task"], "dev_rows": sum(len(lab) for lab, _ in serving),
              "max_batch": args.max_batch, "machine": platform.processor() or platform.machine(),
              "calibration_samples": args.calibration_samples, "rows": rows,
              "date": time.strftime("%Y-%m-%d"), "numpy": np.__version__}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"| variant | agreement with fp32 | batch-invariant | {cm['main_metric']} | rows/s | batch-1 p50 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['error']} | | | | |")
        else:
            print(f"| {r['variant']} | {r['agreement_with_fp32']:.2%} | {r['batch_invariance']:.2%} | "
                  f"{r[cm['main_metric']]:.4f} | {r['rows_per_s']:.0f} | {r['latency_ms_p50']:.2f} |")


if __name__ == "__main__":
    main()
