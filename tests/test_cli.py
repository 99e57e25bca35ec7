"""The command line: help texts, version, unbuilt stages, one-line errors with nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helpers import write
from tft import __version__
from tft.cli import cli

STAGES = ["train", "eval", "predict", "export", "serve", "infer", "bench", "pipeline", "verify"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_every_stage():
    result = run("--help")
    assert result.exit_code == 0
    for name in STAGES + ["tasks", "data"]:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("name", STAGES + ["tasks", "data", "data check"])
def test_each_subcommand_help_explains_itself(name):
    result = run(*name.split(), "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(result.output.splitlines()) >= 3


def test_version():
    assert run("--version").output.strip() == f"tft, version {__version__}"


def test_tasks_lists_catalog():
    out = run("tasks").output
    for name in ("afqmc", "tnews", "iflytek", "cmnli", "sst2", "mrpc", "qnli", "rte", "stsb", "thucnews",
                 "csv", "jsonl", "conll2003", "peoples_daily", "msra", "cluener", "bio"):
        assert f"\n{name} " in "\n" + out


def test_data_check_reports_counts(afqmc_dir):
    result = run("data", "check", "--task", "afqmc", "--data-dir", str(afqmc_dir))
    assert result.exit_code == 0
    assert "train: 3 examples (labelled)" in result.output
    assert "test: 2 examples (unlabelled)" in result.output


def test_bad_data_is_one_line_error_without_traceback(tmp_path):
    d = tmp_path / "afqmc"
    write(d / "train.json", '{"sentence1": "a", "sentence2": "b", "label": "9"}\n')
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "tft", "data", "check", "--task", "afqmc", "--data-dir", str(d)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"Error: {d / 'train.json'}:1: unknown label '9'; expected one of 0, 1"]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_unknown_task_lists_known_ones():
    proc = subprocess.run([sys.executable, "-m", "tft", "data", "check", "--task", "nope", "--data-dir", "."],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown task 'nope'; known tasks: afqmc" in proc.stderr


def test_console_script_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "tft")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_the_cli_forked_from_the_zygote_answers_as_a_plain_subprocess(tmp_path, monkeypatch):
    """tests/zygote.py runs most of the suite's commands: each must exit, print and write as `python -m tft` does
    (working folder, relative paths, exit codes, stderr lines, piped output with no progress frames)."""
    import hashlib

    from zygote import Zygote, run_cli

    cases = [["--help"], ["train", "--task", "nope"], ["serve", "build", "--export", "missing", "--repository", "r"],
             ["data", "sample", "--out", "s", "--train", "30", "--dev", "5", "--test", "2"]]
    results = {}
    # what an in-process training (the family matrix) leaves in the worker's environment: a zygote started before
    # no longer fits it, and a new one must take over rather than every later command running unforked
    before = Zygote.get()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
    assert Zygote.get() is not before
    for way in ("forked", "plain"):
        monkeypatch.setenv("TFT_TEST_NO_ZYGOTE", "1" if way == "plain" else "0")
        cwd = tmp_path / way
        cwd.mkdir()
        zygote = Zygote.get()
        jobs = zygote.jobs
        procs = [run_cli(args, cwd=cwd) for args in cases]
        assert Zygote.get() is zygote and zygote.jobs - jobs == (len(cases) if way == "forked" else 0)
        files = {str(p.relative_to(cwd)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(cwd.rglob("*")) if p.is_file()}
        results[way] = ([(p.returncode, p.stdout, p.stderr.replace(str(cwd), "<cwd>")) for p in procs], files)
    assert results["forked"] == results["plain"]
    codes = [code for code, _, _ in results["plain"][0]]
    assert codes[0] == 0 and codes[1] != 0 and codes[2] != 0 and codes[3] == 0 and results["plain"][1]
