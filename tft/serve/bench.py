"""`tft bench`: served throughput and latency percentiles per concurrency level, on real texts.

Each level sends `requests` requests (each of `batch_size` texts cycled from the input file) with
exactly `concurrency` in flight, after a short warm-up; latency is per request, client-side.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from tft.serve.client import ClientOptions, ModelInfo, _ssl_kwargs, decode_answers, one_line, text_inputs


async def _level(opts: ClientOptions, info: ModelInfo, items: list[dict], concurrency: int, requests: int,
                 batch_size: int, warmup: int) -> dict:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(opts.url, **_ssl_kwargs(opts))
    counter = iter(range(requests + warmup))
    latencies, errors, first_error = [], 0, None

    def batch(i):
        chosen = [items[(i * batch_size + k) % len(items)] for k in range(batch_size)]
        pairs = [c.get("text_pair", "") for c in chosen] if info.pair else None
        return text_inputs(aio, [c["text"] for c in chosen], pairs)

    async def worker(timed: list):
        nonlocal errors, first_error
        for i in counter:
            start = time.perf_counter()
            try:
                result = await client.infer(info.name, batch(i), client_timeout=opts.timeout,
                                            headers=opts.headers or None)
                decode_answers(result, info, batch_size)
            except Exception as e:  # counted and reported, never hidden
                if i >= warmup:
                    errors += 1
                    first_error = first_error or one_line(e)
                continue
            if i >= warmup:
                timed.append((time.perf_counter() - start, time.perf_counter()))

    try:
        timed: list = []
        start = time.perf_counter()
        await asyncio.gather(*(worker(timed) for _ in range(concurrency)))
        end = time.perf_counter()
        # throughput over the timed requests only: from the first timed request's start
        first = min((t_end - lat for lat, t_end in timed), default=start)
        seconds = max(end - first, 1e-9)
        latencies = np.array([lat for lat, _ in timed]) * 1000
    finally:
        await client.close()
    done = len(latencies)
    row = {"concurrency": concurrency, "batch_size": batch_size, "requests": done, "errors": errors,
           "seconds": round(seconds, 3), "requests_per_s": round(done / seconds, 2),
           "texts_per_s": round(done * batch_size / seconds, 2)}
    if done:
        row.update({f"p{q}_ms": round(float(np.percentile(latencies, q)), 2) for q in (50, 95, 99)})
        row["mean_ms"] = round(float(latencies.mean()), 2)
    if first_error:
        row["first_error"] = first_error
    return row


def bench(opts: ClientOptions, info: ModelInfo, items: list[dict], levels: list[int], requests: int,
          batch_size: int = 1, warmup: int = 10) -> list[dict]:
    return [asyncio.run(_level(opts, info, items, c, requests, batch_size, warmup)) for c in levels]


def perf_analyzer_data(items: list[dict], pair: bool) -> dict:
    """The texts as Triton perf_analyzer's `--input-data` JSON: one entry per request, each input's string
    content with its shape (batch 1, the ensemble's `[1]` dims), so the standard tool sends real texts."""
    def tensor(text):
        return {"content": [text], "shape": [1]}

    return {"data": [{"TEXT": tensor(i["text"]), **({"TEXT_PAIR": tensor(i.get("text_pair", ""))} if pair else {})}
                     for i in items]}


def table(rows: list[dict]) -> str:
    head = f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'texts/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['concurrency']:>11} {r['requests']:>8} {r['errors']:>6} {r['texts_per_s']:>9.1f} "
                     f"{r.get('p50_ms', float('nan')):>8.2f} {r.get('p95_ms', float('nan')):>8.2f} "
                     f"{r.get('p99_ms', float('nan')):>8.2f}")
    return "\n".join(lines)


def plot(rows: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tft.fsutil import atomic_write_bytes

    levels = [r["concurrency"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(levels, [r["texts_per_s"] for r in rows], marker="o")
    a.set(xlabel="concurrency", ylabel="texts/s", title="throughput", xscale="log", xticks=levels)
    a.set_xticklabels(levels)
    for q in (50, 95, 99):
        b.plot(levels, [r.get(f"p{q}_ms", np.nan) for r in rows], marker="o", label=f"p{q}")
    b.set(xlabel="concurrency", ylabel="ms", title="latency per request", xscale="log", xticks=levels)
    b.set_xticklabels(levels)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
