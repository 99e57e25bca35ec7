"""`tft bench` against Triton's own `perf_analyzer`, side by side on one server and the same real texts.

    # perf_analyzer from tritonclient 2.51.0 (newer builds need glibc 2.38), in its own venv:
    apt-get install libb64-0d
    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install "tritonclient[all]==2.51.0" nvidia-cuda-runtime-cu12
    python benchmarks/bench_vs_perf_analyzer.py --repository demo_out/pipeline/model_repository --model afqmc \
        --input demo_out/data/dev.json --perf-analyzer /tmp/pa/bin/perf_analyzer

For each concurrency level both tools send batch-1 requests of the same texts to the same embedded Triton,
alternating tool by level; the ratio is tft bench's texts/s over perf_analyzer's infer/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def perf_analyzer_run(binary: Path, url: str, model: str, data: Path, concurrency: int, interval_ms: int) -> float:
    libdir = next(Path(binary).parents[1].glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    proc = subprocess.run([str(binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
                           "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms)],
                          capture_output=True, text=True, env=env, timeout=600)
    match = re.search(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec", proc.stdout)
    if proc.returncode != 0 or not match:
        raise SystemExit(f"perf_analyzer failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, type=Path, help="Real texts: the task's file format or .txt lines.")
    parser.add_argument("--perf-analyzer", required=True, type=Path)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--requests", type=int, default=3000, help="tft bench: timed requests per level.")
    parser.add_argument("--interval-ms", type=int, default=5000, help="perf_analyzer: measurement window.")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_vs_perf_analyzer.json"))
    args = parser.parse_args()

    from tft.serve import bench as bench_mod
    from tft.serve.cli import _items
    from tft.serve.client import Client, ClientOptions
    from tft.serve.server import Ports, TritonServer

    levels = [int(x) for x in args.levels.split(",")]
    rows = []
    with TritonServer(args.repository, Ports.free()) as server:
        opts = ClientOptions(url=server.grpc_url)
        info = Client(options=opts).info(args.model)
        items = _items(info, (), str(args.input))
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "pa.json"
            data.write_text(json.dumps(bench_mod.perf_analyzer_data(items, info.pair), ensure_ascii=False))
            for level in levels:
                tft = bench_mod.bench(opts, info, items, [level], args.requests, 1, warmup=50)[0]
                pa = perf_analyzer_run(args.perf_analyzer, server.grpc_url, args.model, data, level, args.interval_ms)
                rows.append({"concurrency": level, "tft_bench_texts_per_s": tft["texts_per_s"],
                             "tft_bench_p50_ms": tft["p50_ms"], "perf_analyzer_infer_per_s": round(pa, 2),
                             "ratio": round(tft["texts_per_s"] / pa, 3)})
                print(f"c={level}: tft bench {tft['texts_per_s']:.1f} texts/s, perf_analyzer {pa:.1f} infer/s, "
                      f"ratio {tft['texts_per_s'] / pa:.2f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "repository": str(args.repository), "input": str(args.input),
                                     "texts": len(items), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
