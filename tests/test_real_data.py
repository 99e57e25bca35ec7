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
