"""The distribution: `make dist`'s wheel installs a working `tft` into a clean virtual environment, under a name of
its own (PyPI's `tft` is another project), with every extra the README names."""

from __future__ import annotations

import subprocess
import venv
import zipfile

import pytest

from helpers import REPO


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory, built_wheel):
    """The bare wheel (no extra) in a fresh venv: what `pip install tft_toolchain-*.whl` gives."""
    env_dir = tmp_path_factory.mktemp("wheel-env")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    proc = subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", built_wheel],
                          capture_output=True, text=True, timeout=900, cwd=env_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def _metadata(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def test_the_wheel_is_tft_toolchain_with_every_extra(built_wheel):
    meta = _metadata(built_wheel)
    assert "Name: tft-toolchain" in meta
    extras = {line.split(": ", 1)[1] for line in meta if line.startswith("Provides-Extra:")}
    assert {"train", "cpu", "gpu", "serve", "client", "trt", "test"} <= extras
    requires = [line for line in meta if line.startswith("Requires-Dist:")]

    def of(extra):
        return {r.split(": ", 1)[1].split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
                for r in requires if f'extra == "{extra}"' in r}

    assert {"torch", "transformers", "onnx"} <= of("train") and of("cpu") == {"onnxruntime"}
    assert of("gpu") == {"onnxruntime-gpu"} and {"tritonclient", "nvidia-pytriton"} <= of("serve")
    assert "tensorrt" in of("trt") and of("client") == {"tritonclient"}
    with zipfile.ZipFile(built_wheel) as z:  # the Triton Python models travel with it (serve build copies them)
        names = z.namelist()
    assert "tft/serve/models/tokenizer.py" in names and "tft/cli.py" in names


def test_the_installed_wheel_runs_tft(wheel_env, tmp_path):
    tft = wheel_env / "bin" / "tft"
    proc = subprocess.run([tft, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "train a transformer" in proc.stdout, proc.stderr
    proc = subprocess.run([tft, "tasks"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "afqmc" in proc.stdout and "cluener" in proc.stdout, proc.stderr
    # it runs from the venv, not from the checkout beside the tests
    where = subprocess.run([wheel_env / "bin" / "python", "-c", "import tft; print(tft.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert str(wheel_env) in where.stdout and str(REPO) not in where.stdout
    proc = subprocess.run([tft, "train", "--task", "sst2"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "Error: this command needs the Python package 'torch', which is not installed: pip install "
        "'tft-toolchain[train]'"]


def test_no_install_line_names_pypis_tft():
    lines = [f"{path.name}:{n}" for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "pip install" in line and ("'tft[" in line or " tft[" in line or line.rstrip().endswith(" tft"))]
    assert not lines, lines
