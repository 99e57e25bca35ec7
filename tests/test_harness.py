"""The suite's own harness (tests/conftest.py) under a test worker that dies: `make test` runs on pytest-xdist
workers, and a worker killed mid-test (SIGKILL leaves no word) must neither hang the run nor turn a passing test red;
a test that kills its worker each time it runs must still fail, once, and not be run for ever (tests/scheduling.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

DIES_ONCE = """
import signal

def test_before():
    pass

def test_dies_once(tmp_path_factory):
    mark = tmp_path_factory.getbasetemp().parent / "died"
    if not mark.exists():
        mark.write_text("x")
        signal.raise_signal(signal.SIGKILL)
    assert RESULT

def test_after():
    pass
"""

# files that run before the one that dies, so the worker that dies has finished some (xdist 3.8 then hung)
EARLIER = "\n".join(f"def test_earlier_{i}():\n    pass\n" for i in range(3))


def run_suite(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """The harness's conftest over four files that pass and then `body`, as `make test` runs them."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8")
    for i in range(4):
        (tmp_path / f"test_a_{i}.py").write_text(EARLIER, encoding="utf-8")
    (tmp_path / "test_dies.py").write_text(body, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder",
                           "-p", "no:cacheprovider", "-o", "timeout=120", "."], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)


def summary(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_a_test_whose_worker_died_once_is_run_again_and_its_own_result_counts(tmp_path):
    proc = run_suite(tmp_path, DIES_ONCE.replace("RESULT", "True"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "15 passed, 1 rerun" in summary(proc), proc.stdout[-3000:]
    assert "RERUN worker 'gw" in proc.stdout
    assert "test_dies.py::test_dies_once' (killed by SIGKILL); run again on a new worker" in proc.stdout
    assert proc.stdout.count("node down: Not properly terminated") == 1


def test_a_rerun_that_fails_fails_the_run_with_its_own_error(tmp_path):
    proc = run_suite(tmp_path, DIES_ONCE.replace("RESULT", "1 + 1 == 3"))
    assert proc.returncode == 1
    assert "1 failed, 14 passed, 1 rerun" in summary(proc), proc.stdout[-3000:]
    assert "FAILED test_dies.py::test_dies_once - assert (1 + 1) == 3" in proc.stdout


def test_a_test_that_kills_every_worker_fails_once_and_is_not_run_a_third_time(tmp_path):
    always = DIES_ONCE.replace("if not mark.exists():", "if True:")
    proc = run_suite(tmp_path, always.replace("RESULT", "True"))
    assert proc.returncode == 1
    assert "1 failed, 14 passed, 1 rerun" in summary(proc), proc.stdout[-3000:]
    assert proc.stdout.count("node down: Not properly terminated") == 2  # the rerun and the failure, no third
    assert "maximum crashed workers reached" not in proc.stdout
