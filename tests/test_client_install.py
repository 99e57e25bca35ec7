"""`pip install 'tft-toolchain[client]'`: a fresh virtual environment with only the client extra of the built wheel
(no torch, no transformers, no onnxruntime) queries the embedded Triton with `tft infer`, and a training command tells
that user in one line which extra it needs."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

import pytest



@pytest.fixture(scope="module")
def client_env(tmp_path_factory, built_wheel):
    env_dir = tmp_path_factory.mktemp("client-env")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    proc = subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", f"{built_wheel}[client]"],
                          capture_output=True, text=True, timeout=900, cwd=env_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def test_the_client_extra_installs_no_training_stack(client_env):
    for absent in ("torch", "transformers", "onnxruntime", "tokenizers"):
        proc = subprocess.run([client_env / "bin" / "python", "-c", f"import {absent}"], capture_output=True,
                              cwd=client_env)
        assert proc.returncode != 0, f"{absent} is installed by tft-toolchain[client]"


def test_infer_from_a_client_only_install(client_env, served, afqmc_sample, tmp_path):
    out = tmp_path / "answers.jsonl"
    proc = subprocess.run([client_env / "bin" / "tft", "infer", "--url", served.url, "--model", "afqmc",
                           "-i", afqmc_sample / "dev.json", "-o", out], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 300 and all(r["label"] in ("0", "1") for r in rows)
    # the same answers as the full install's client gives
    reference = tmp_path / "reference.jsonl"
    full = subprocess.run([sys.executable, "-m", "tft", "infer", "--url", served.url, "--model", "afqmc",
                           "-i", afqmc_sample / "dev.json", "-o", reference], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    assert [r["label"] for r in rows] == [json.loads(x)["label"] for x in reference.read_text().splitlines()]


def test_a_training_command_names_the_extra_it_needs(client_env, tmp_path):
    proc = subprocess.run([client_env / "bin" / "tft", "train", "--task", "afqmc", "--data-dir", tmp_path,
                           "--model", "scratch:tiny", "--output-dir", tmp_path / "r"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: this command needs the Python package 'torch', which is not installed: pip install 'tft-toolchain[train]'"]
