"""Helpers the tests share (fixtures live in conftest.py): paths, file writing, the CLI as a user runs it,
`tft serve start` as a process."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    """Run the real CLI in a subprocess (as a user would)."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tft", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


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
