"""Readers on the real public files in ../shared/datasets (skipped in one line where that folder is absent, as on a
fresh clone; `.ci/run` runs them again beside the data)."""

from __future__ import annotations

import pytest

from helpers import real_dataset
from tft.data.dataset import load_dataset
from tft.tasks import get_task

pytestmark = pytest.mark.realdata

COUNTS = {
    "afqmc": {"train": 34334, "dev": 4316, "test": 3861},
    "cluener": {"train": 10748, "dev": 1343, "test": 1345},
    "tnews": {"train": 53360, "dev": 10000, "test": 10000},
    "sst2": {"train": 67349, "dev": 872, "test": 1821},
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_official_example_counts(name):
    folder = real_dataset(name)
    ds = load_dataset(get_task(name), folder, tuple(COUNTS[name]))
    assert {s: len(ds[s].examples) for s in COUNTS[name]} == COUNTS[name]
    assert ds["train"].labeled and ds["dev"].labeled and not ds["test"].labeled
    if name == "cluener":
        ex = ds["dev"].examples[0]  # 彭小军认为，国内银行现在走的是台湾的发卡模式...
        assert ex.tags[0:3] == ["B-name", "I-name", "I-name"] and ex.tags[15:17] == ["B-address", "I-address"]
        assert len(ds.labels) == 21
    if name == "afqmc":
        assert ds["dev"].examples[0].text_pair == "里可以提花呗额度"


@pytest.mark.slow  # trains, exports, serves and verifies a model
def test_multi_label_from_the_real_cluener_goes_through_the_pipeline(tmp_path):
    """Issue 29: each real CLUENER sentence labelled with the entity types it mentions (10 types; a sentence may
    mention none or several) goes through `tft pipeline --task jsonl --multi-label` on scratch:tiny (no Chinese
    encoder can be had offline; its [CLS] alone learns nothing here in 6 epochs, a cnn head over its token states
    reaches 0.76 micro-F1 in 2): served = ONNX Runtime = PyTorch on every dev sentence, the served micro-F1 clearly
    above the best constant answer, and sentences answered with several labels."""
    import json

    from helpers import multi_label_from_ner, run_tft
    from test_multi_label import best_constant_micro_f1

    data = multi_label_from_ner(real_dataset("cluener"), tmp_path / "data")
    out = tmp_path / "out"
    proc = run_tft("pipeline", "--task", "jsonl", "--multi-label", "--data-dir", data, "--output-dir", out,
                   "--model", "scratch:tiny", "--head", "cnn", "--epochs", 2, "--batch-size", 32, "--lr", "1e-3",
                   "--max-seq-length", 64,
                   "--no-openvino",
                   timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["passed"] is True and report["examples"] == 1343
    assert report["agreement"]["pytorch~served"] == 1.0 and report["agreement"]["onnxruntime~served"] == 1.0
    labels = json.loads((out / "export" / "manifest.json").read_text(encoding="utf-8"))["labels"]
    assert len(labels) == 10
    gold = [set(json.loads(line)["label"]) for line in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    served = report["runs"]["served"]["metrics"]["micro_f1"]
    constant = best_constant_micro_f1(gold, labels)
    assert served > constant + 0.15, (served, constant)
    # the served answers equal the export's (agreement 1.0 above): sentences answered with several labels occur
    proc = run_tft("predict", "--export", out / "export", data / "dev.jsonl", "-o", tmp_path / "answers.jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sizes = [len(json.loads(line)["labels"]) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8")
             .splitlines()]
    assert max(sizes) >= 2 and sum(n >= 2 for n in sizes) > 50, sizes[:50]
