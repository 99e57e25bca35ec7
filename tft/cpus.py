"""The CPUs this process is given, not the machine's core count: its affinity mask and its cgroup CPU quota (a pod's
`resources.limits.cpu`, `docker run --cpus`). Thread pools sized from os.cpu_count() in a pod limited to 2 CPUs of a
64-core node run 64 threads on 2 CPUs' time: ONNX Runtime fell to 0.54x of one thread with a busy neighbour on 2
cores, and PyTorch's OpenMP up to 20x slower (issue 32's measurement). Torch-free; the served model step carries its
own copy of `available_cpus` (it runs inside Triton without tft).

What the CPU is (its model name and the instruction-set flags that decide an engine's speed) is read here too: export
records it beside every speed it measures, and bf16 is offered only where it is native."""

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


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bfloat16 (PyTorch's CPU autocast, OpenVINO's bf16 inference)
# the flags that decide which engine and precision run fastest, recorded beside every speed tft measures
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
               "amx_fp16")


def _cpuinfo(cpuinfo: str | None) -> str:
    if cpuinfo is not None:
        return cpuinfo
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere). TFT_CPU_FLAGS, space-separated, stands in
    for them (tests, and containers whose /proc/cpuinfo is not the host's)."""
    if cpuinfo is None and os.environ.get("TFT_CPU_FLAGS") is not None:
        return set(os.environ["TFT_CPU_FLAGS"].split())
    for line in _cpuinfo(cpuinfo).splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    import platform

    for line in _cpuinfo(cpuinfo).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def bf16_native(flags: set[str] | None = None) -> bool:
    """Whether bfloat16 runs natively (AVX-512 BF16 or AMX); elsewhere it is emulated and slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def cpu_record(flags: set[str] | None = None, cpuinfo: str | None = None) -> dict:
    """The CPU a speed was measured on: its model name, the flags that matter for speed, and the CPUs given."""
    cpuinfo = _cpuinfo(cpuinfo)  # read once, for the flags and the model name
    flags = cpu_flags(cpuinfo) if flags is None else flags
    return {"model": cpu_model(cpuinfo), "flags": sorted(f for f in SPEED_FLAGS if f in flags),
            "cpus": available_cpus()}


def same_cpu(recorded: dict | None, here: dict) -> bool:
    """Speeds measured on `recorded` hold here: the same model name and speed flags (the count of CPUs may differ)."""
    return bool(recorded) and recorded.get("model") == here.get("model") and \
        sorted(recorded.get("flags", ())) == sorted(here.get("flags", ()))
