"""Served throughput (embedded Triton, gRPC, ensemble tokenizer -> model -> postprocess) against offline
ONNX Runtime on the same model, texts and threads, measured in one run.

    python benchmarks/serve_throughput.py --checkpoint runs/sst2-minilm/best       # see docs/benchmarks.md
    python benchmarks/serve_throughput.py --export exports/sst2-minilm --requests 400
    python benchmarks/serve_throughput.py --export exports/sst2-int8 --artifacts fp32,int8 --levels 16 \
        --no-plain --out benchmarks/results/serve_int8.json      # served int8 vs fp32, side by side

Offline: `tft predict --onnx`'s path in-process (tokenize, pad, ONNX Runtime, softmax) in batches of
--max-batch. Served: one text per request, concurrency 1/4/16, with and without dynamic batching
(max batch --max-batch, queue delay --queue-delay-us), the model step running ONNX Runtime with the
same intra-op thread count. Client and server share the machine, as they would on one host.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def offline_throughput(export_dir: Path, items: list[dict], threads: int, batch: int, repeats: int = 3) -> float:
    """`tft predict --onnx`'s own path (ExportPredictor: tokenize, pad, run, answers), best of `repeats` passes."""
    from tft.export.runtime import ExportPredictor

    predictor = ExportPredictor(export_dir, threads=threads)
    predictor.answer_items(items, batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.answer_items(items, batch)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def served_rows(export_dir: Path, items, threads, max_batch, queue_delay_us, dynamic, levels, requests, work,
                artifact: str | None = None):
    from tft.serve.bench import bench
    from tft.serve.client import ClientOptions, model_info
    from tft.serve.repository import BuildOptions, build_repository
    from tft.serve.server import Ports, TritonServer

    repo = work / (("dynamic" if dynamic else "plain") + (f"-{artifact}" if artifact else ""))
    build_repository(export_dir, repo, BuildOptions(name="m", max_batch=max_batch, queue_delay_us=queue_delay_us,
                                                    dynamic_batching=dynamic, threads=threads, artifact=artifact))
    with TritonServer(repo, Ports.free(), log_file=work / f"triton-{repo.name}.log") as server:
        opts = ClientOptions(url=server.grpc_url, timeout=120)
        info = model_info(opts, "m")
        return bench(opts, info, items, levels, requests, batch_size=1, warmup=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a tft checkpoint to export first (fp32 only)")
    p.add_argument("--export", help="an existing export folder instead")
    p.add_argument("--input", help="texts (the task's dev file by default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--queue-delay-us", type=int, default=2000)
    p.add_argument("--levels", default="1,4,16")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--artifacts", default="", help="comma-separated export artifacts served one after the other "
                   "(default: the export's fp32)")
    p.add_argument("--no-plain", action="store_true", help="only with dynamic batching")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_throughput.json"))
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tft-serve-bench-"))

    from tft.manifest import read_export_manifest
    from tft.inference import read_inputs, task_of

    if args.export:
        export_dir = Path(args.export)
    else:
        from tft.export.pipeline import run_export

        export_dir = run_export(args.checkpoint, output_dir=str(work / "export"), optimize=False, max_batch=args.max_batch,
                                parity_samples=128)
    manifest = read_export_manifest(export_dir)
    task = task_of(manifest["checkpoint_manifest"])
    source = args.input or str(Path(manifest["checkpoint_manifest"]["data_dir"]) / "dev")
    if not args.input:
        from tft.data.dataset import load_dataset

        source = str(load_dataset(task, manifest["checkpoint_manifest"]["data_dir"], ("dev",))["dev"].path)
    items = read_inputs(source, task)
    print(f"{len(items)} texts from {source}; model {manifest['model_type']} ({manifest['task']})", flush=True)

    offline = offline_throughput(export_dir, items, args.threads, args.max_batch)
    print(f"offline ONNX Runtime: {offline:.1f} texts/s (batch {args.max_batch}, {args.threads} threads)", flush=True)
    results = {"offline_texts_per_s": round(offline, 2), "served": {}}
    artifacts = [a for a in args.artifacts.split(",") if a] or [None]
    for artifact, dynamic in itertools.product(artifacts, (True,) if args.no_plain else (True, False)):
        rows = served_rows(export_dir, items, args.threads, args.max_batch, args.queue_delay_us, dynamic, levels,
                           args.requests, work, artifact)
        key = ("dynamic" if dynamic else "no_dynamic") + (f"-{artifact}" if artifact else "")
        results["served"][key] = rows
        for r in rows:
            print(f"{key:>18} batching  c={r['concurrency']:>2}  "
                  f"{r['texts_per_s']:7.1f} texts/s ({r['texts_per_s'] / offline:5.1%} of offline)  "
                  f"p50 {r.get('p50_ms', 0):6.1f} ms  p95 {r.get('p95_ms', 0):6.1f}  p99 {r.get('p99_ms', 0):6.1f}  "
                  f"errors {r['errors']}", flush=True)
    results.update({"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, no GPU",
                    "threads": args.threads, "max_batch": args.max_batch, "queue_delay_us": args.queue_delay_us,
                    "requests_per_level": args.requests, "texts": len(items), "source": source,
                    "date": time.strftime("%Y-%m-%d")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
