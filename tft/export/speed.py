"""The speed `--artifact auto` ranks by: every servable CPU artifact timed warm, side by side, on the dev split's own
rows at the serving batch sizes, in interleaved rounds repeated until the figures settle.

The parity gate's single pass (one artifact after another, each once) is noise at this scale: on a 2-core EPYC it
ranked ONNX Runtime's fused graph ahead of the plain one, which a steady benchmark found 10-18% slower (issue 32).
Here each round runs every artifact once over the same batches (the order rotated per round, so none always runs
right after another's cache-warming), and the record keeps each artifact's median and spread over the rounds, with
the CPU (model name and speed flags) that measured them: ranks hold on that CPU only.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from tft.cpus import cpu_record
from tft.predictions import pad_batch

log = logging.getLogger("tft")
SPEED_BATCH_SIZES = (1, 8, 32)  # a lone request, Triton's usual dynamic batch, a full one (capped by --max-batch)
ROWS_PER_SIZE = 64  # dev rows per batch size and round
MIN_ROUNDS, MAX_ROUNDS = 3, 9
SETTLED_SPREAD = 0.05  # stop once every artifact's spread (half the range over its median) is under this
MAX_SECONDS = 90.0


def serving_rows(serving) -> list[tuple[object, dict]]:
    """(label, unpadded feature row) for each row of the parity gate's serving batches, in their order."""
    out = []
    for labels, inputs in serving or ():
        for i, label in enumerate(labels):
            real = inputs["attention_mask"][i].astype(bool)
            out.append((label, {k: v[i][real].tolist() for k, v in inputs.items()}))
    return out


def speed_batches(rows: list[dict], names, max_batch: int, tokenizer) -> dict[int, list[dict]]:
    """Per serving batch size, dev rows in their order (mixed lengths) padded to each batch's longest."""
    if not rows:
        return {}
    pad_id, left = tokenizer.pad_token_id or 0, tokenizer.padding_side == "left"
    out = {}
    for size in sorted({min(s, max_batch) for s in SPEED_BATCH_SIZES}):
        take = [rows[i % len(rows)] for i in range(max(size, ROWS_PER_SIZE))]
        out[size] = [pad_batch(take[i:i + size], names, pad_id, left=left) for i in range(0, len(take), size)]
    return out


def measure(runners: dict, batches: dict[int, list[dict]], *, min_rounds: int = MIN_ROUNDS,
            max_rounds: int = MAX_ROUNDS, settled: float = SETTLED_SPREAD, max_seconds: float = MAX_SECONDS,
            clock=time.perf_counter) -> dict[str, dict]:
    """{name: {"rows_per_s": {size: median}, "score": geometric mean over sizes, "spread": relative, "rounds": n}}.
    Each runner is warmed on every batch shape first; rounds interleave the runners."""
    names = list(runners)
    if not names or not batches:
        return {}
    for name in names:  # warm: first calls compile kernels and allocate
        for size_batches in batches.values():
            runners[name](size_batches[0])
    rounds: dict[str, list[dict[int, float]]] = {name: [] for name in names}
    started = clock()
    for r in range(max_rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            figures = {}
            for size, size_batches in batches.items():
                rows, start = 0, clock()
                for batch in size_batches:
                    runners[name](batch)
                    rows += len(batch["input_ids"])
                figures[size] = rows / max(clock() - start, 1e-9)
            rounds[name].append(figures)
        done = r + 1 >= min_rounds and all(_spread([_score(f) for f in rounds[n]]) < settled for n in names)
        if done or clock() - started > max_seconds:
            break
    out = {}
    for name in names:
        scores = [_score(f) for f in rounds[name]]
        out[name] = {"rows_per_s": {str(size): float(np.median([f[size] for f in rounds[name]])) for size in batches},
                     "score": float(np.median(scores)), "spread": _spread(scores), "rounds": len(scores)}
    return out


def _score(figures: dict[int, float]) -> float:
    """One figure per round: the geometric mean of the rows/s at each batch size (no size dominates)."""
    return math.exp(sum(math.log(v) for v in figures.values()) / len(figures))


def _spread(values: list[float]) -> float:
    """Half the range over the median: how far a figure of this artifact moves between rounds."""
    if len(values) < 2:
        return float("inf")
    median = float(np.median(values))
    return (max(values) - min(values)) / 2 / median if median else float("inf")


def measure_artifacts(artifacts: list[dict], runners: dict, batches: dict[int, list[dict]]) -> dict | None:
    """Time the artifacts that run on this CPU and record each one's `speed`; -> the CPU that measured them."""
    cpu = {name: runner for name, runner in runners.items()
           if (getattr(runner, "providers", None) or [""])[0] in ("CPUExecutionProvider", "OpenVINO CPU")}
    if not cpu or not batches:
        return None
    start = time.perf_counter()
    speeds = measure(cpu, batches)
    for artifact in artifacts:
        if artifact["name"] in speeds:
            artifact["speed"] = speeds[artifact["name"]]
    log.info("speed: %s (%d rounds, %.0fs)", ", ".join(
        f"{name} {s['score']:.0f} rows/s ±{s['spread']:.0%}" for name, s in speeds.items()),
        max(s["rounds"] for s in speeds.values()), time.perf_counter() - start)
    return {**cpu_record(), "batch_sizes": sorted(batches)}
