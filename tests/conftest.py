"""Shared fixtures: everything is built locally (no hub): a character vocab tokenizer, a tiny BERT,
small data files in each supported format."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("TFT_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

CJK = "花呗借呗怎么还款可以提前吗为什么不能用开通了我的额度是多少蚂蚁支付宝银行卡账单分期利息取消关闭北京上海广州张三李四王五公司大学医院中国人民在去年成立"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write(path: Path, content, mode: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content), encoding="utf-8")
    else:
        path.write_text(content, encoding="utf-8")
    return path


def build_vocab() -> list[str]:
    words = ["good", "bad", "movie", "film", "great", "awful", "the", "a", "is", "was", "not", "john", "smith",
             "lives", "in", "paris", "london", "works", "at", "acme", "google", "and", "very", "plot", "fun"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    subwords = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys(SPECIALS + words + chars + subwords + list(CJK)))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import BertTokenizerFast

    out = tmp_path_factory.mktemp("tokenizer")
    vocab = build_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5: `vocab_file=` is silently ignored; `vocab=` with a path is what loads the file.
    tok = BertTokenizerFast(vocab=str(out / "vocab.txt"), model_max_length=128)
    assert tok.vocab_size == len(vocab)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny randomly initialised BERT saved with save_pretrained, with the tokenizer beside it."""
    import shutil

    from transformers import BertConfig

    out = tmp_path_factory.mktemp("tiny-bert")
    vocab_size = len((tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")) - 1
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    config.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture
def afqmc_dir(tmp_path) -> Path:
    d = tmp_path / "afqmc"
    write(d / "train.json", [
        {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还款", "label": "1"},
        {"sentence1": "借呗可以提前还款吗", "sentence2": "为什么不能用花呗", "label": "0"},
        {"sentence1": "我的额度是多少", "sentence2": "额度是多少", "label": "1"},
    ])
    write(d / "dev.json", [
        {"sentence1": "花呗怎么开通", "sentence2": "开通花呗", "label": "1"},
        {"sentence1": "支付宝银行卡", "sentence2": "账单分期利息", "label": "0"},
    ])
    write(d / "test.json", [
        {"id": 0, "sentence1": "借呗取消", "sentence2": "关闭借呗"},
        {"id": 1, "sentence1": "花呗分期", "sentence2": "分期利息"},
    ])
    return d


@pytest.fixture
def cluener_dir(tmp_path) -> Path:
    d = tmp_path / "cluener"
    write(d / "train.json", [
        {"text": "张三在北京大学", "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}},
        {"text": "李四去年在上海", "label": {"name": {"李四": [[0, 1]]}, "address": {"上海": [[5, 6]]}}},
    ])
    write(d / "dev.json", [
        {"text": "王五在广州医院", "label": {"name": {"王五": [[0, 1]]}, "address": {"广州": [[3, 4]]}}},
    ])
    write(d / "test.json", [{"id": 0, "text": "张三去上海"}])
    return d


CONLL_TRAIN = """-DOCSTART- -X- -X- O

John NNP B-NP I-PER
Smith NNP I-NP I-PER
lives VBZ B-VP O
in IN B-PP O
Paris NNP B-NP I-LOC
. . O O

Acme NNP B-NP I-ORG
works VBZ B-VP O
"""


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Feature caches and downloads of the tests go to a private folder, never ~/.cache."""
    os.environ["TFT_CACHE"] = str(tmp_path_factory.mktemp("tft-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


def run_tft(*args, cwd=None, timeout=600, env=None):
    """Run the real CLI in a subprocess (as a user would)."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tft", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def afqmc_sample(tmp_path_factory) -> Path:
    from tft.data.synthetic import write_sample

    return write_sample("afqmc", tmp_path_factory.mktemp("data") / "afqmc", train=2000, dev=300, test=50)


@pytest.fixture(scope="session")
def cluener_sample(tmp_path_factory) -> Path:
    from tft.data.synthetic import write_sample

    return write_sample("cluener", tmp_path_factory.mktemp("data") / "cluener", train=800, dev=200, test=50)


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory, afqmc_sample) -> Path:
    """A scratch:tiny AFQMC-format model that has learned the synthetic task (session-wide, ~30 s)."""
    out = tmp_path_factory.mktemp("runs") / "afqmc"
    proc = run_tft("--quiet", "train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", out, "--epochs", 8, "--batch-size", 32, "--lr", "3e-4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def trained_ner(tmp_path_factory, cluener_sample) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cluener"
    proc = run_tft("--quiet", "train", "--task", "cluener", "--data-dir", cluener_sample, "--model", "scratch:tiny",
                   "--output-dir", out, "--epochs", 4, "--batch-size", 32, "--lr", "5e-4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def pair_export(trained_pair, tmp_path_factory) -> Path:
    """fp32, optimized, int8 and fp16 ONNX of the AFQMC-format model, parity-checked up to batch 16."""
    out = tmp_path_factory.mktemp("exports") / "afqmc"
    proc = run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", out, "--int8", "--fp16",
                   "--max-batch", 16, "--parity-samples", 128)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def ner_export(trained_ner, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "cluener"
    proc = run_tft("export", "--checkpoint", trained_ner / "best", "--output-dir", out, "--max-batch", 16,
                   "--parity-samples", 64)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


class ServeProcess:
    """`tft serve start` as a user runs it (a real tritonserver child), on free 127.0.0.1 ports."""

    def __init__(self, repository: Path, workdir: Path, health_interval: float = 1.0, extra=()):
        import subprocess
        import sys

        from tft.serve.server import Ports

        self.ports = Ports.free()
        self.ready_file = workdir / "ready.json"
        self.log = workdir / "serve.log"
        self.triton_log = workdir / "triton.log"
        self.url = f"127.0.0.1:{self.ports.grpc}"
        cmd = [sys.executable, "-m", "tft", "serve", "start", "--repository", str(repository),
               "--grpc-port", str(self.ports.grpc), "--http-port", str(self.ports.http),
               "--metrics-port", str(self.ports.metrics), "--ready-file", str(self.ready_file),
               "--health-interval", str(health_interval), "--log-file", str(self.triton_log), *extra]
        self.process = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, timeout: float = 180.0) -> "ServeProcess":
        import time

        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"tft serve start did not become ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def served(pair_export, ner_export, tmp_path_factory):
    """One embedded Triton for the session, serving `afqmc` (pair classification) and `cluener` (NER)."""
    work = tmp_path_factory.mktemp("served")
    repo = work / "model_repository"
    for export, name in ((pair_export, "afqmc"), (ner_export, "cluener")):
        proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--name", name,
                       "--max-batch", 16)
        assert proc.returncode == 0, proc.stderr[-3000:]
    server = ServeProcess(repo, work).wait_ready()
    server.repository = repo
    yield server
    server.stop()
