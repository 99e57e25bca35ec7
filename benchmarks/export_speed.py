"""Inference latency: PyTorch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side.

    python benchmarks/export_speed.py                      # MiniLM-L6 size and BERT-base size
    python benchmarks/export_speed.py --sst2-checkpoint runs/sst2-minilm/best   # + int8 accuracy on SST-2 dev

Batch 8, sequence 128, 2 threads, median of --repeats runs after warm-up. The BERT-base-size model is
randomly initialised (speed does not depend on the weights); the accuracy row uses a real fine-tuned
checkpoint and the full SST-2 dev set.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {
    "MiniLM-L6 (6x384)": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "BERT-base (12x768)": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def speed_rows(batch: int, seq: int, threads: int, repeats: int) -> list[dict]:
    from transformers import BertConfig, BertForSequenceClassification

    from tft.export import onnx_export, quantize
    from tft.export.config import OnnxConfig
    from tft.export.runtime import OrtModel

    torch.set_num_threads(threads)
    rows = []
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(1000, 20000, (batch, seq)).astype(np.int64),
              "attention_mask": np.ones((batch, seq), dtype=np.int64),
              "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
    torch_inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    for name, size in SIZES.items():
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(vocab_size=30522, num_labels=2, **size,
                                                         attn_implementation="eager")).eval()
        cfg = OnnxConfig("bert", ("input_ids", "attention_mask", "token_type_ids"), False, 2)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = onnx_export.export_onnx(model, cfg, Path(tmp) / "m.onnx")
            int8 = quantize.quantize_int8(fp32, Path(tmp) / "m.int8.onnx")
            ort32, ort8 = OrtModel(fp32, threads), OrtModel(int8, threads)

            @torch.inference_mode()
            def eager():
                model(**torch_inputs)

            t_torch = median_ms(eager, repeats)
            t_ort32 = median_ms(lambda: ort32(inputs), repeats)
            t_ort8 = median_ms(lambda: ort8(inputs), repeats)
            mb = fp32.stat().st_size / 2**20, int8.stat().st_size / 2**20
        rows.append({"model": name, "pytorch_ms": t_torch, "ort_fp32_ms": t_ort32, "ort_int8_ms": t_ort8,
                     "fp32_mb": mb[0], "int8_mb": mb[1]})
    return rows


def sst2_accuracy(checkpoint: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "tft", "--quiet", "export", "--checkpoint", checkpoint, "--output-dir", str(out),
           "--int8", "--parity-samples", "872", "--int8-min-agreement", "0", "--int8-max-metric-drop", "1"]
    subprocess.run(cmd, check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    return {a["name"]: a["parity"] for a in manifest["artifacts"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sst2-checkpoint", help="a `tft train --task sst2` best/ folder for the int8 accuracy row")
    args = parser.parse_args()
    rows = speed_rows(args.batch, args.seq, args.threads, args.repeats)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads; batch {args.batch}, "
          f"sequence {args.seq}, median of {args.repeats}\n")
    print("| model | PyTorch eager fp32 | ORT fp32 | ORT int8 | int8 vs PyTorch | size fp32 -> int8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['pytorch_ms']:.1f} ms | {r['ort_fp32_ms']:.1f} ms | {r['ort_int8_ms']:.1f} ms | "
              f"{r['pytorch_ms'] / r['ort_int8_ms']:.2f}x | {r['fp32_mb']:.0f} -> {r['int8_mb']:.0f} MB |")
    if args.sst2_checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            parity = sst2_accuracy(args.sst2_checkpoint, Path(tmp) / "exp")
        p = parity["int8"]
        print(f"\nSST-2 dev (872): PyTorch accuracy {p['metric_pytorch']:.4f}, ORT fp32 "
              f"{parity['fp32']['metric_artifact']:.4f}, ORT int8 {p['metric_artifact']:.4f} "
              f"({(p['metric_artifact'] - p['metric_pytorch']) * 100:+.2f} points), int8 agreement {p['agreement']:.2%}")


if __name__ == "__main__":
    main()
