"""Threads from the CPUs a process is given (tft/cpus.py): a faked cgroup quota, v2 and v1, and the served model
step's own copy of the rule (it runs inside Triton without tft)."""

from __future__ import annotations

import os
import runpy
import sys
import types

import pytest

from helpers import REPO


def _served_available_cpus():
    """The copy in the Triton Python model, loaded without Triton (its imports stubbed)."""
    fake = types.ModuleType("triton_python_backend_utils")
    sys.modules.setdefault("triton_python_backend_utils", fake)
    return runpy.run_path(str(REPO / "tft" / "serve" / "models" / "model_step.py"))["available_cpus"]


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: 1.5 CPUs -> 2 threads
    ({"cpu.max": "max 100000\n"}, None),  # no limit
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_threads_follow_the_cgroup_quota(tmp_path, files, quota):
    import math

    from tft.cpus import available_cpus, cgroup_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mine = len(os.sched_getaffinity(0))
    expected = mine if quota is None else min(mine, max(1, math.ceil(quota)))
    assert cgroup_quota(tmp_path) == quota and available_cpus(tmp_path) == expected
    assert _served_available_cpus()(str(tmp_path)) == expected  # the served step's copy decides alike


def test_a_quota_below_the_cores_sizes_the_offline_runtime(tmp_path, monkeypatch, tiny_export):
    from tft import cpus
    from tft.export.runtime import OrtModel

    monkeypatch.setattr(cpus, "available_cpus", lambda root=cpus.CGROUP: 1)
    model = OrtModel(tiny_export() / "model.onnx")
    assert model.session.get_session_options().intra_op_num_threads == 1
