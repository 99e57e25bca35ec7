"""Helpers the tests share (fixtures live in conftest.py): paths, file writing, the CLI as a user runs it,
`tft serve start` as a process."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("TFT_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def real_dataset(name: str) -> Path:
    """A real public dataset's folder for the checks on real data (marked `realdata`); where it is absent, as on a
    fresh clone, the check skips in one line saying how to get it."""
    import pytest

    folder = SHARED_DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"real {name} data not at {folder}: set TFT_SHARED_DATASETS to a folder holding {name}/ "
                    f"(`tft data check --task {name}` downloads its public archive where the network allows)")
    return folder

CJK = "花呗借呗怎么还款可以提前吗为什么不能用开通了我的额度是多少蚂蚁支付宝银行卡账单分期利息取消关闭北京上海广州张三李四王五公司大学医院中国人民在去年成立"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tree_hashes(*roots) -> dict:
    """{path: sha256} of every file under the roots (and the roots themselves if files)."""
    out = {}
    for root in roots:
        root = Path(root)
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line_error(proc, code: int = 1) -> str:
    """The command failed with `code` and said so in one line, without a traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write(path: Path, content, mode: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content), encoding="utf-8")
    else:
        path.write_text(content, encoding="utf-8")
    return path


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


def run_tft(*args, cwd=None, timeout=600, env=None):
    """Run the real CLI in a new process (as a user would): forked from a zygote that has imported torch and
    transformers once (tests/zygote.py), or a plain `python -m tft` subprocess where the environment differs."""
    from zygote import run_cli

    return run_cli([str(a) for a in args], cwd=cwd, timeout=timeout, env=env)


class ServeProcess:
    """`tft serve start` as a user runs it (a real tritonserver child), on free 127.0.0.1 ports."""

    def __init__(self, repository: Path, workdir: Path, health_interval: float = 1.0, extra=(), env=None):
        import subprocess
        import sys

        from tft.serve.server import Ports, _die_with_parent

        self.ports = Ports.free()
        self.ready_file = workdir / "ready.json"
        self.log = workdir / "serve.log"
        self.triton_log = workdir / "triton.log"
        self.url = f"127.0.0.1:{self.ports.grpc}"
        cmd = [sys.executable, "-m", "tft", "serve", "start", "--repository", str(repository),
               "--grpc-port", str(self.ports.grpc), "--http-port", str(self.ports.http),
               "--metrics-port", str(self.ports.metrics), "--ready-file", str(self.ready_file),
               "--health-interval", str(health_interval), "--log-file", str(self.triton_log), *extra]
        # a test worker that dies takes its server along (SIGTERM: it stops Triton), so the rerun of its file on a
        # new worker meets no server of the dead one's
        self.process = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                        preexec_fn=_die_with_parent(os.getpid()))

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

    def stubs(self, model: str) -> list[int]:
        """This server's Python stubs of `model`: another test worker may serve a model of the same name."""
        from tft.serve.health import stub_processes

        return stub_processes(model, under=self.process.pid)

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


def tiny_export(out: Path, tokenizer_dir: Path, task: str = "afqmc", kind: str = "pair_classification",
                labels=("0", "1"), max_batch: int = 16, max_seq_length: int = 64) -> Path:
    """An export folder as `tft export` writes it, made in milliseconds: a hand-built ONNX graph (logits from the
    token ids, no training), the test tokenizer, and a manifest. For tests of layout, builds, records and
    choices, which need an export's shape, not a trained model's answers."""
    import onnx
    from onnx import TensorProto, helper

    from tft.fsutil import file_sha256

    out.mkdir(parents=True)
    n = max(1, len(labels))
    token_task = kind == "token_classification"
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    types = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                           ["batch", "sequence", n] if token_task else ["batch", n])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, n], [0.01 * (i + 1) for i in range(n)])
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
             helper.make_node("Add", ["masked", "token_type_ids"], ["mixed"]),
             helper.make_node("Cast", ["mixed"], ["f"], to=TensorProto.FLOAT)]
    if token_task:
        nodes += [helper.make_node("Unsqueeze", ["f", "axis"], ["col"]),
                  helper.make_node("MatMul", ["col", "w"], ["logits"])]
        init = [weights, helper.make_tensor("axis", TensorProto.INT64, [1], [-1])]
    else:
        nodes += [helper.make_node("ReduceSum", ["f", "axis"], ["s"], keepdims=1),
                  helper.make_node("MatMul", ["s", "w"], ["logits"])]
        init = [weights, helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "tiny", [ids, mask, types], [logits], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out / "model.onnx"))
    files = {}
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).exists():
            (out / name).write_bytes((tokenizer_dir / name).read_bytes())
            files[name] = file_sha256(out / name)
    pair = kind == "pair_classification"
    fields = {"text_field": "sentence1" if pair else "text", "text_pair_field": "sentence2" if pair else None,
              "label_field": "label", "word_joiner": "" if token_task else " ", "max_chars": None}
    checkpoint = {"format": "tft.checkpoint/1", "task": task, "kind": kind, "labels": list(labels),
                  "max_seq_length": max_seq_length, "model_input_names": ["input_ids", "attention_mask",
                                                                          "token_type_ids"],
                  "main_metric": "f1" if token_task else "accuracy", **fields}
    manifest = {"format": "tft.export/1", "task": task, "kind": kind, "labels": list(labels), **fields,
                "pad_token_id": 0, "inputs": [{"name": i, "dtype": "int64", "shape": ["batch", "sequence"]}
                                              for i in ("input_ids", "attention_mask", "token_type_ids")],
                "outputs": [{"name": "logits", "dtype": "float32"}], "max_batch": max_batch,
                "max_seq_length": max_seq_length, "opset": 17, "model_type": "bert",
                "artifacts": [{"name": "fp32", "file": "model.onnx", "precision": "fp32", "runtime": "onnxruntime",
                               "sha256": file_sha256(out / "model.onnx"),
                               "parity": {"passed": True, "rows_per_s": 100.0, "batch_invariance": 1.0}}],
                "rejected": [], "tokenizer": "tokenizer.json", "files": files,
                "canary": {"text": "good film", **({"text_pair": "bad film"} if pair else {})},
                "checkpoint_manifest": checkpoint}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def multi_label_from_ner(source: Path, out: Path, csv_separator: str | None = None) -> Path:
    """A multi-label set from CLUENER-format files: each sentence labelled with the entity types it mentions (none
    for a sentence without entities), as jsonl (a list per line) or, given a separator, CSV (labels joined by it)."""
    import csv
    import io

    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        if not (source / f"{split}.json").exists():
            continue
        rows = []
        for n, line in enumerate((source / f"{split}.json").read_text(encoding="utf-8").splitlines()):
            if line.strip():
                record = json.loads(line)
                rows.append({"id": f"{split}-{n}", "text": record["text"], "label": sorted(record.get("label") or {})})
        if csv_separator is None:
            (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["id", "text", "label"])
            writer.writerows([r["id"], r["text"], csv_separator.join(r["label"])] for r in rows)
            (out / f"{split}.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return out
