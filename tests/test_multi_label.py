"""Multi-label classification, the kind added to prove that a kind owns its behaviour: reading (a JSON list, or a CSV
cell of joined labels), the checks of bad labels at file:line, BCE training with the encoder's own head, a cnn head and
an XLNet-family model, the threshold recorded and used by every stage, export's parity gate, the served answers
({"labels": [...], "scores": {label: p}}) verified over gRPC, and `tft infer --resume`."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

import families as tiny
from helpers import ServeProcess, one_line_error, run_tft, write


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))

TOPICS = {
    "sports": ["the match went to extra time", "our team scored twice", "the coach praised the striker"],
    "food": ["the pasta was salty", "we ordered spicy noodles", "dessert came with fresh cream"],
    "travel": ["the flight left at dawn", "our hotel faced the harbour", "the train crossed the border"],
}
NEUTRAL = ["it rained all afternoon", "nothing much happened", "the meeting was moved to monday"]


def topic_rows(n: int, seed: int) -> list[dict]:
    """English texts mentioning any subset of three topics (none included): learnable from their phrases."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    subsets = [s for k in range(len(names) + 1) for s in itertools.combinations(names, k)]
    rows = []
    for i in range(n):
        chosen = list(rng.choice(subsets))
        parts = [rng.choice(TOPICS[t]) for t in chosen] or [rng.choice(NEUTRAL)]
        rng.shuffle(parts)
        rows.append({"id": f"r{i}", "text": " and ".join(parts), "label": sorted(chosen)})
    return rows


def write_topics(folder: Path, fmt: str = "jsonl", separator: str = "|", train: int = 480, dev: int = 120) -> Path:
    for split, rows in (("train", topic_rows(train, 1)), ("dev", topic_rows(dev, 2)), ("test", topic_rows(30, 3))):
        if fmt == "jsonl":
            write(folder / f"{split}.jsonl", rows)
        else:
            buffer = io.StringIO()
            out = csv.writer(buffer)
            out.writerow(["id", "text", "label"])
            out.writerows([r["id"], r["text"], separator.join(r["label"])] for r in rows)
            write(folder / f"{split}.csv", buffer.getvalue())
    return folder


def best_constant_micro_f1(gold: list[set], labels) -> float:
    """The micro-F1 of the best answer that ignores the text (the same label set for every row)."""
    from tft.tasks import multi_label_metrics

    truth = np.array([[name in g for name in labels] for g in gold])
    best = 0.0
    for k in range(len(labels) + 1):
        for subset in itertools.combinations(range(len(labels)), k):
            answer = np.zeros_like(truth)
            answer[:, list(subset)] = True
            best = max(best, multi_label_metrics(answer, truth)["micro_f1"])
    return best


def multi_label_task(**options):
    from tft.tasks import get_task

    return get_task(options.pop("task", "jsonl")).with_fields(multi_label=True, **options)


# --- reading and checking --------------------------------------------------------------------------------------
def test_labels_are_a_json_list_or_a_joined_cell_and_none_is_a_label_set(tmp_path):
    from tft.data.dataset import load_dataset

    ds = load_dataset(multi_label_task(), write_topics(tmp_path / "j"))
    assert ds.labels == ("food", "sports", "travel")
    examples = ds["train"].examples
    assert all(isinstance(ex.label, tuple) for ex in examples)
    assert any(ex.label == () for ex in examples) and any(len(ex.label) >= 2 for ex in examples)
    as_csv = load_dataset(multi_label_task(task="csv", label_separator="|"), write_topics(tmp_path / "c", "csv"))
    assert [ex.label for ex in as_csv["train"].examples] == [ex.label for ex in examples]
    # the kind's training target: a multi-hot row in label order; the feature cache keeps it as floats
    from tft.train.feature_cache import load_features, save_features

    kind = ds.task.kind
    target = kind.encode_label(("travel", "food"), {label: i for i, label in enumerate(ds.labels)})
    assert target == [1.0, 0.0, 1.0]
    features = [{"input_ids": [1, 5, 2], "labels": target}, {"input_ids": [1, 2], "labels": [0.0, 0.0, 0.0]}]
    save_features(tmp_path / "f.npz", features)
    assert load_features(tmp_path / "f.npz") == features


@pytest.mark.parametrize("content, expected", [
    ('{"text": "a", "label": ["x"]}\n{"text": "b", "label": "x"}\n',
     'train.jsonl:2: field \'label\' must be a list of labels for a multi-label task, got "x"'),
    ('{"text": "a", "label": ["x", ""]}\n', "train.jsonl:1: field 'label' has an empty label in [\"x\", \"\"]"),
    ('{"text": "a", "label": ["x", 3.5]}\n', "train.jsonl:1: field 'label' has an invalid label 3.5 in its list"),
    ('{"text": "a", "label": null}\n', "train.jsonl:1: field 'label' is null"),
])
def test_a_bad_label_is_one_line_at_its_file_and_line(tmp_path, content, expected):
    data = tmp_path / "d"
    write(data / "train.jsonl", content)
    write(data / "dev.jsonl", '{"text": "a", "label": ["x"]}\n')
    msg = one_line_error(run_tft("train", "--task", "jsonl", "--multi-label", "--data-dir", data, "--model",
                                 "scratch:tiny", "--output-dir", tmp_path / "r"))
    assert expected in msg
    assert not (tmp_path / "r").exists()


def test_csv_cells_dev_labels_and_options_are_checked_in_one_line(tmp_path):
    data = tmp_path / "c"
    write(data / "train.csv", "text,label\na good match,sports;food\nrain,\n")
    write(data / "dev.csv", "text,label\nnoodles,food;;sports\n")
    common = ("train", "--task", "csv", "--multi-label", "--data-dir", data, "--model", "scratch:tiny")
    msg = one_line_error(run_tft(*common, "--label-separator", ";", "--output-dir", tmp_path / "r"))
    assert "dev.csv:2: field 'label' has an empty label in \"food;;sports\"" in msg
    write(data / "dev.csv", "text,label\nnoodles,food;travel\n")
    msg = one_line_error(run_tft(*common, "--label-separator", ";", "--output-dir", tmp_path / "r"))
    assert "dev.csv:2: unknown label 'travel'; expected one of food, sports" in msg
    assert "--threshold applies to multi-label tasks: add --multi-label" in one_line_error(
        run_tft("train", "--task", "csv", "--data-dir", data, "--threshold", "0.3", "--output-dir", tmp_path / "r"))
    assert "--tune-thresholds applies to multi-label tasks: add --multi-label" in one_line_error(
        run_tft("train", "--task", "csv", "--data-dir", data, "--tune-thresholds", "--output-dir", tmp_path / "r"))
    assert "--multi-label apply to the generic 'csv' and 'jsonl' tasks" in one_line_error(
        run_tft("train", "--task", "afqmc", "--multi-label", "--output-dir", tmp_path / "r"))
    assert "--threshold" in one_line_error(run_tft(*common, "--threshold", "1.5", "--output-dir", tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    # `tft data check` reads and checks multi-label files as training does
    write(data / "dev.csv", "text,label\nnoodles,food\nrain,\n")
    proc = run_tft("data", "check", "--task", "csv", "--multi-label", "--label-separator", ";", "--data-dir", data)
    assert proc.returncode == 0 and "labels (2): food, sports" in proc.stdout, proc.stderr
    write(data / "dev.csv", "text,label\nnoodles,food;;sports\n")
    assert "dev.csv:2: field 'label' has an empty label" in one_line_error(
        run_tft("data", "check", "--task", "csv", "--multi-label", "--label-separator", ";", "--data-dir", data))


def test_the_kind_decides_scores_answers_and_metrics_at_its_threshold():
    from tft.answers import shape_of
    from tft.tasks import MULTI_LABEL, kind_from, kind_of

    kind = kind_from({"kind": MULTI_LABEL, "kind_params": {"threshold": 0.3}})
    assert kind.threshold == 0.3 and kind_of(MULTI_LABEL).threshold == 0.5
    logits = np.array([[2.0, -0.5, -3.0], [-4.0, -4.0, -4.0]])  # sigmoid: 0.88, 0.38, 0.05 | 0.02 x 3
    assert kind.decisions(logits) == [(True, True, False), (False, False, False)]
    assert kind_of(MULTI_LABEL).decisions(logits)[0] == (True, False, False)
    answers = shape_of(kind).answers(list(logits), [{}, {}], [{}, {}], ("a", "b", "c"), " ")
    assert answers[0]["labels"] == ["a", "b"] and answers[1]["labels"] == []  # none is an answer
    assert answers[0]["scores"]["c"] == pytest.approx(1 / (1 + np.exp(3.0)))
    gold = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert kind.metrics(logits, gold, ("a", "b", "c")) == pytest.approx(
        {"micro_f1": 2 / 3, "macro_f1": 1 / 3, "exact_match": 0.5})
    shape = shape_of(kind)
    assert shape.same({"labels": ["b", "a"]}, {"labels": ["a", "b"]}) and not shape.same({"labels": []}, {"labels": ["a"]})


def test_thresholds_tuned_per_label_on_dev_are_recorded_and_used_everywhere():
    """--tune-thresholds: each label's threshold is the grid value with its best dev F1 (ties nearest the global
    one); the kind records them (kind_params) and its decisions, metric and answers, offline and served, use them."""
    from tft.answers import shape_of
    from tft.predictions import multi_label
    from tft.tasks import MULTI_LABEL, kind_from, kind_of

    rng = np.random.default_rng(0)
    gold = rng.random((400, 2)) < 0.4
    # label a: positives score 0.25-0.45, negatives 0.0-0.2 (0.5 answers none); label b: separable at 0.5 already
    scores = np.where(gold, np.c_[rng.uniform(0.25, 0.45, 400), rng.uniform(0.6, 0.9, 400)],
                      np.c_[rng.uniform(0.0, 0.2, 400), rng.uniform(0.1, 0.4, 400)])
    logits = np.log(scores / (1 - scores))
    plain = kind_of(MULTI_LABEL).with_params({"tune": True})
    tuned = plain.tuned(logits, gold.astype(float), ("a", "b"))
    assert tuned.thresholds[0] in (0.25, 0.2) and tuned.thresholds[1] == 0.5 and not tuned.tune
    assert plain.metrics(logits, gold.astype(float), ("a", "b"))["macro_f1"] < 0.6
    assert tuned.metrics(logits, gold.astype(float), ("a", "b"))["macro_f1"] == 1.0
    again = kind_from({"kind": MULTI_LABEL, "kind_params": tuned.params()})
    assert again.thresholds == tuned.thresholds and again.decisions(logits) == tuned.decisions(logits)
    assert kind_of(MULTI_LABEL).tuned(logits, gold.astype(float), ("a", "b")) == kind_of(MULTI_LABEL)  # not asked
    row = np.array([[np.log(0.3 / 0.7), np.log(0.3 / 0.7)]])
    assert multi_label(row, ("a", "b"), [0.25, 0.5])[0]["labels"] == ["a"]  # the served step's function
    assert shape_of(again).answers(list(row), [{}], [{}], ("a", "b"), " ")[0]["labels"] == ["a"]


# --- end to end ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_label_pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("multi-label")
    data = write_topics(work / "data")
    out = work / "out"
    proc = run_tft("pipeline", "--task", "jsonl", "--multi-label", "--threshold", "0.4", "--data-dir", data,
                   "--output-dir", out, "--model", "scratch:tiny", "--epochs", 8, "--batch-size", 16, "--lr", "1e-3",
                   "--max-batch", 16, "--no-openvino")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return data, out


@pytest.mark.slow  # trains a model and serves it
def test_the_pipeline_serves_multi_label_answers_verified_over_grpc(multi_label_pipeline):
    data, out = multi_label_pipeline
    report = read_json(out / "report.json")
    assert report["passed"] is True and report["examples"] == 120
    served = report["runs"]["served"]["metrics"]
    assert set(served) == {"micro_f1", "macro_f1", "exact_match"}
    assert served == report["runs"]["pytorch"]["metrics"]  # fp32 served: the same answers as PyTorch
    assert report["agreement"]["pytorch~served"] == 1.0
    gold = [set(r["label"]) for r in topic_rows(120, 2)]
    assert served["micro_f1"] > best_constant_micro_f1(gold, ("food", "sports", "travel")) + 0.15, served
    checkpoint = read_json(out / "run" / "best" / "tft.json")
    assert checkpoint["kind_params"]["threshold"] == 0.4 and checkpoint["main_metric"] == "micro_f1"
    assert read_json(out / "export" / "manifest.json")["kind_params"]["threshold"] == 0.4


@pytest.mark.slow  # serves a model
def test_served_answers_carry_label_sets_and_resume_keeps_them(multi_label_pipeline, tmp_path):
    data, out = multi_label_pipeline
    inputs = write(tmp_path / "in.jsonl", topic_rows(40, 9))
    server = ServeProcess(out / "model_repository", tmp_path).wait_ready()
    try:
        full = tmp_path / "full.jsonl"
        proc = run_tft("infer", "--url", server.url, "--model", "jsonl", "-i", inputs, "-o", full)
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers = [json.loads(line) for line in full.read_text(encoding="utf-8").splitlines()]
        assert all(set(a["scores"]) == {"food", "sports", "travel"} for a in answers)
        assert all(all(a["scores"][name] >= 0.4 for name in a["labels"]) for a in answers)
        sizes = {len(a["labels"]) for a in answers}
        assert 0 in sizes and max(sizes) >= 2, sizes  # no label and several labels are both answers
        # an interrupted run resumed: the answers kept from the partial keep their label sets and scores
        lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
        resumed = tmp_path / "out.jsonl"
        (tmp_path / "out.jsonl.partial").write_text("".join(lines[:15]), encoding="utf-8")
        proc = run_tft("infer", "--url", server.url, "--model", "jsonl", "-i", inputs, "-o", resumed, "--resume")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "answers kept" in proc.stderr  # (repeated texts are answered once: fewer than 15 kept)
        assert resumed.read_text(encoding="utf-8") == full.read_text(encoding="utf-8")
    finally:
        server.stop()


@pytest.mark.slow  # trains two models
@pytest.mark.parametrize("variant", ["cnn", "xlnet"])
def test_a_cnn_head_and_an_xlnet_model_learn_and_export_multi_label(variant, tmp_path):
    data = write_topics(tmp_path / "data", "csv", separator="|")
    model = ("scratch:tiny" if variant == "cnn" else
             str(tiny.build("xlnet", [r["text"] for r in topic_rows(480, 1)], tmp_path / "xlnet")))
    extra = ("--head", "cnn", "--tune-thresholds") if variant == "cnn" else ()
    run = tmp_path / "run"
    proc = run_tft("train", "--task", "csv", "--multi-label", "--label-separator", "|", "--data-dir", data,
                   "--model", model, "--output-dir", run, "--epochs", 8, "--batch-size", 16, "--lr", "1e-3",
                   "--no-plot", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_json(run / "best" / "tft.json")
    params = manifest["kind_params"]
    assert {k: params[k] for k in ("threshold", "separator")} == {"threshold": 0.5, "separator": "|"}
    if variant == "cnn":  # tuned on dev: one threshold per label, recorded; `tft eval` below judges with them
        assert len(params["thresholds"]) == 3 and "tuned on dev" in proc.stderr
    else:
        assert "thresholds" not in params
    gold = [set(r["label"]) for r in topic_rows(120, 2)]
    assert manifest["metrics"]["micro_f1"] > best_constant_micro_f1(gold, ("food", "sports", "travel")) + 0.1, manifest
    proc = run_tft("export", "--checkpoint", run / "best", "--output-dir", tmp_path / "export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fp32 = next(a for a in read_json(tmp_path / "export" / "manifest.json")["artifacts"] if a["name"] == "fp32")
    assert fp32["parity"]["agreement"] == 1.0 and fp32["parity"]["metric"] == "micro_f1"
    # offline answers from the export read the CSV with the recorded separator
    proc = run_tft("eval", "--checkpoint", run / "best")
    assert proc.returncode == 0 and json.loads(proc.stdout)["micro_f1"] == pytest.approx(manifest["metrics"]["micro_f1"])


def test_a_new_kind_is_its_class_and_a_registry_entry(tmp_path, monkeypatch):
    """docs/architecture.md, "where to add a kind": an imaginary kind (labels read case-blind, so "POS" and "pos" are
    one class) is a subclass of Kind and an entry in KIND_SPECS; reading, checks, features, metrics and answers take
    it without another change. It is not shipped: it lives in this test."""
    from tft import tasks
    from tft.answers import shape_of
    from tft.data.dataset import load_dataset
    from tft.data.features import encode

    @dataclasses.dataclass(frozen=True)
    class CaseBlind(tasks.Kind):
        def read_label(self, value, site, seen=None):
            return tasks.class_label(value, site, seen).lower()

    monkeypatch.setitem(tasks.KIND_SPECS, "case_blind", CaseBlind("case_blind"))
    task = dataclasses.replace(tasks.get_task("jsonl"), kind=tasks.kind_of("case_blind"))
    write(tmp_path / "train.jsonl", [{"text": "good", "label": "POS"}, {"text": "bad", "label": "neg"}])
    write(tmp_path / "dev.jsonl", [{"text": "fine", "label": "Pos"}, {"text": "poor", "label": "NEG"}])
    ds = load_dataset(task, tmp_path)
    assert ds.labels == ("neg", "pos") and [ex.label for ex in ds["dev"].examples] == ["pos", "neg"]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "good": 2, "bad": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    features = encode(ds["dev"].examples, tokenizer, 16, ds.labels, task.kind).features
    assert [f["labels"] for f in features] == [1, 0]
    logits = np.array([[0.1, 2.0], [0.3, -1.0]])
    assert task.kind.metrics(logits, np.array([1, 0]), ds.labels)["accuracy"] == 1.0
    assert [a["label"] for a in shape_of(task.kind).answers(list(logits), features, [{}, {}], ds.labels, " ")] == [
        "pos", "neg"]
