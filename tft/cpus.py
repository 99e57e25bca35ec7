"""The CPUs this process is given, not the machine's core count: its affinity mask and its cgroup CPU quota (a pod's
`resources.limits.cpu`, `docker run --cpus`). Thread pools sized from os.cpu_count() in a pod limited to 2 CPUs of a
64-core node run 64 threads on 2 CPUs' time: ONNX Runtime fell to 0.54x of one thread with a busy neighbour on 2
cores, and PyTorch's OpenMP up to 20x slower (issue 32's measurement). Torch-free; the served model step carries its
own copy of `available_cpus` (it runs inside Triton without tft)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup may use per period (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`); None
    without a limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP) -> int:
    """Whole CPUs this process can run on at once: the affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)
