"""CPU inference engines side by side in one run, on one trained checkpoint and its export: speed at batch 1, 8 and 32
(dev rows in order, mixed lengths), dev metric, agreement with PyTorch fp32, batch invariance and score drift.

    tft export --checkpoint runs/sst2/best --output-dir exports/sst2 --int8 --openvino --openvino-int8 --max-batch 32
    python benchmarks/cpu_engines.py --checkpoint runs/sst2/best --export exports/sst2

Engines: PyTorch fp32 and (where the CPU has native bf16) bf16 autocast, then every CPU artifact of the export on its
own runtime as tft serves it (ONNX Runtime: the plain fp32 graph, the fused one, dynamic int8; OpenVINO: fp32, bf16,
NNCF int8). Speeds come from export's own benchmark code (`tft.export.speed.measure`: warm, interleaved rounds,
medians), ratios to the ONNX Runtime plain fp32 graph; accuracy columns from the parity gate's serving-batch
measurement (`tft.export.parity.measure_serving`: dev rows in a shuffled order, batches of random sizes up to max,
each row also alone). The CPU's model name and speed flags head the output: figures hold on that CPU only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def torch_runner(checkpoint: Path, kind: str, bf16: bool):
    import torch

    from tft.export.onnx_export import load_for_export

    model = load_for_export(checkpoint, kind)

    @torch.no_grad()
    def run(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in batch.items()})
        return out.logits.float().numpy()

    run.providers = ["PyTorch"]
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--export", type=Path, required=True, help="A `tft export` folder of that checkpoint")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--dev-samples", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=240.0, help="Time limit of the speed rounds")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/cpu_engines.json"))
    args = p.parse_args()

    from transformers import AutoConfig, AutoTokenizer

    from tft.cpus import available_cpus, bf16_native, cpu_record
    from tft.export.parity import measure_serving
    from tft.export.pipeline import parity_inputs
    from tft.export.runtime import runner_for
    from tft.export.speed import measure, serving_rows, speed_batches
    from tft.manifest import read_checkpoint_manifest, read_export_manifest
    from tft.metrics import compute_per_example
    from tft.tasks import kind_from

    cm = read_checkpoint_manifest(args.checkpoint)
    manifest = read_export_manifest(args.export)
    tokenizer, config = AutoTokenizer.from_pretrained(args.checkpoint), AutoConfig.from_pretrained(args.checkpoint)
    max_len = manifest["max_seq_length"]
    _, serving, _ = parity_inputs(cm, tokenizer, config, args.max_batch, max_len, args.dev_samples, None)
    names = [i["name"] for i in manifest["inputs"]]
    serving = [(labels, {k: v for k, v in b.items() if k in names}) for labels, b in serving]
    rows = [row for _, row in serving_rows(serving)]

    runners = {"PyTorch fp32": torch_runner(args.checkpoint, cm["kind"], False)}
    if bf16_native():
        runners["PyTorch bf16 autocast"] = torch_runner(args.checkpoint, cm["kind"], True)
    described = {"fp32": "ORT fp32 (plain graph)", "fp32-optimized": "ORT fp32-optimized (fused)",
                 "int8": "ORT dynamic int8", "int8-static": "ORT static int8 (Q/DQ)", "openvino-fp32": "OpenVINO fp32",
                 "openvino-bf16": "OpenVINO bf16", "openvino-int8": "OpenVINO int8 (NNCF)"}
    for art in manifest["artifacts"]:
        if art.get("runtime") == "tensorrt" or art["precision"] == "fp16":
            continue  # GPU artifacts
        runners[described.get(art["name"], art["name"])] = runner_for(args.export / art["file"], art, device="cpu")

    kind = kind_from(cm)
    reference = runners["PyTorch fp32"]
    results = {}
    for name, runner in runners.items():
        measured = measure_serving(reference, runner, serving, kind=kind)
        metric = compute_per_example(kind, tuple(cm["labels"]), measured["logits"], measured["gold"])[cm["main_metric"]]
        results[name] = {"agreement": measured["serving_agreement"], "batch_invariance": measured["batch_invariance"],
                         "score_drift": measured["score_drift"], cm["main_metric"]: metric}
        print(f"accuracy measured: {name}", flush=True)
    speeds = measure(runners, speed_batches(rows, names, args.max_batch, tokenizer), max_seconds=args.max_seconds)
    base = speeds["ORT fp32 (plain graph)"]["rows_per_s"]
    cpu = cpu_record()
    out = {"cpu": cpu, "threads": available_cpus(), "checkpoint": str(args.checkpoint), "dev_rows": len(rows),
           "engines": {n: {**results[n], "speed": speeds[n]} for n in runners}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")

    sizes = list(base)
    print(f"\nCPU: {cpu['model']}; flags: {' '.join(cpu['flags'])}; {available_cpus()} threads; {len(rows)} dev rows")
    print("| engine | " + " | ".join(f"batch {s}" for s in sizes) + f" | dev {cm['main_metric']} | agreement with "
          "PyTorch | batch-invariant | max score drift | rounds |")
    print("|---" * (len(sizes) + 6) + "|")
    for name in runners:
        r, s = results[name], speeds[name]
        ratios = " | ".join(f"{s['rows_per_s'][k] / base[k]:.2f}x ({s['rows_per_s'][k]:.0f}/s)" for k in sizes)
        print(f"| {name} | {ratios} | {r[cm['main_metric']]:.2%} | {r['agreement']:.2%} | {r['batch_invariance']:.2%} "
              f"| {r['score_drift']:.2g} | {s['rounds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
