"""Preflight (tft/train/preflight.py): any encoder checked before the first training step.

Families tft has no description for, built here from their configs (tests/families.py: OUTSIDE): those that can go
through tft's chain are served by the family matrix (tests/test_families.py: PASSING_OUTSIDE); those that cannot are
refused here in one line, in seconds, with no run folder left behind."""

from __future__ import annotations

import json
import time

import pytest

import families as tiny
from helpers import one_line_error, run_tft

# family -> what its line must name: the check that fails and why
REFUSED = {
    "fnet": ("preflight (padding)", "padded in a batch"),  # token mixing by FFT: padding moves every answer
    "longformer": ("preflight (onnx)", "runs at the traced shape"),  # windowed attention: the trace holds its length
    "nystromformer": ("preflight (train step)", "padded batch"),  # landmarks over a fixed number of segments
    # a convolution over the whole sequence, and an embedding that mixes each token with its neighbours: the padded
    # positions' tokens reach the answers (ConvBERT was served 1.2e-4 from its own export in the family matrix)
    "convbert": ("preflight (padding)", "what sits in padded positions reaches its answers"),
    "mobilebert": ("preflight (padding)", "what sits in padded positions reaches its answers"),
}


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    from tft.data.synthetic import write_sample

    return write_sample("sst2", tmp_path_factory.mktemp("preflight") / "sst2", train=200, dev=40, test=4)


def _texts(folder) -> list[str]:
    return [line.split("\t")[0] for line in (folder / "train.tsv").read_text().splitlines()[1:]]


def _features(tokenizer, texts, labels=(0, 1)):
    return [{**{k: v for k, v in tokenizer(t).items()}, "labels": labels[i % 2]} for i, t in enumerate(texts)]


def test_a_tiny_bert_passes_every_check_in_seconds(tiny_bert_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tft.tasks import kind_of
    from tft.train.preflight import check_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tiny_bert_dir, num_labels=2))
    model.train()
    result = check_model(model, tokenizer, _features(tokenizer, ["good film", "a bad plot is not fun", "great"]),
                         kind_of("sequence_classification"), 64, "tiny-bert")
    assert set(result.checks) == {"inputs", "train_step", "padding", "onnx"}
    assert result.inputs == ("input_ids", "attention_mask", "token_type_ids") and result.padding_side == "right"
    assert result.seconds < 10 and result.record()["passed"] is True
    assert model.training and all(p.grad is None for p in model.parameters())  # left as it was found


def test_inputs_follow_what_forward_takes(tiny_bert_dir):
    """A tokenizer that makes token_type_ids for a model whose forward() has none (DistilBERT): the input is left out
    of training, export and serving instead of crashing the first step."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from tft.tasks import kind_of
    from tft.train.preflight import check_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=len(tokenizer), dim=16, n_layers=1,
                                                                 n_heads=2, hidden_dim=32, num_labels=2))
    feats = _features(tokenizer, ["good film", "a bad plot"])
    assert "token_type_ids" in feats[0]
    result = check_model(model, tokenizer, feats, kind_of("sequence_classification"), 64, "distil")
    assert result.inputs == ("input_ids", "attention_mask")


def test_another_models_tokenizer_is_one_line(tiny_bert_dir):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tft.tasks import kind_of
    from tft.train.preflight import PreflightError, check_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    small = BertForSequenceClassification(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    with pytest.raises(PreflightError, match=r"preflight \(inputs\).*past the model's 10 embeddings.*tokenizer saved"):
        check_model(small, tokenizer, _features(tokenizer, ["good film in paris"]), kind_of("sequence_classification"), 64,
                    "small")


@pytest.mark.slow
def test_check_model_passes_scratch_tiny_and_writes_nothing(sentiment, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_tft("--quiet", "check-model", "scratch:tiny", "--task", "sst2", "--data-dir", sentiment, "--json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] and result["model_type"] == "bert" and result["seconds"] < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(REFUSED))
def test_a_family_tft_cannot_serve_is_refused_before_training(family, sentiment, tmp_path):
    model = tiny.build(family, _texts(sentiment), tmp_path / family, max_positions=128)
    out = tmp_path / "run"
    start = time.monotonic()
    proc = run_tft("train", "--task", "sst2", "--data-dir", sentiment, "--model", model, "--output-dir", out,
                   "--max-seq-length", 64, "--epochs", 1, "--no-plot")
    seconds = time.monotonic() - start
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    check, why = REFUSED[family]
    assert check in lines[0] and why in lines[0] and f"({family}, a family tft has no description for)" in lines[0]
    assert "internal error" not in proc.stderr
    assert seconds < 60 and not out.exists()  # no run folder, no checkpoint: nothing to clean up or resume
    same = run_tft("--quiet", "check-model", model, "--task", "sst2", "--data-dir", sentiment, "--max-seq-length", 64)
    assert one_line_error(same) == lines[0]


@pytest.mark.slow
def test_an_operator_onnx_lacks_is_one_line_at_export(sentiment, tmp_path):
    """Trained anyway (--skip-preflight): the export that cannot be says so in one line, with what to try, and
    writes nothing."""
    model = tiny.build("fnet", _texts(sentiment), tmp_path / "fnet")
    out = tmp_path / "run"
    proc = run_tft("--quiet", "train", "--task", "sst2", "--data-dir", sentiment, "--model", model, "--output-dir", out,
                   "--max-steps", 2, "--max-seq-length", 64, "--no-plot", "--skip-preflight")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "best" / "tft.json").read_text())["preflight"]["skipped"] is True
    proc = run_tft("--quiet", "export", "--checkpoint", out / "best", "--output-dir", tmp_path / "export")
    line = one_line_error(proc)
    assert "a fnet model cannot be exported to ONNX (opset 17" in line and "aten::fft_fftn" in line
    assert "--exporter dynamo" in line and not (tmp_path / "export").exists()
