"""`python -m tft ...` for the tests, without paying its imports each time.

A `tft train` spends about 8 s of CPU importing torch and transformers before it reads an option (AMD EPYC, 2
cores), and the suite runs the CLI some 150 times. A zygote process imports them once per test worker and forks a
child for each command: the child is a new process (its own PID, state, working folder, environment, stdin from
/dev/null, stdout and stderr to files) that runs `tft`'s `__main__` as `python -m tft` does, from modules that were
imported but never run. Torch, transformers and huggingface_hub read some variables at import time, so the
zygote's environment must be the command's, but for PYTEST_CURRENT_TEST and TFT_* (tft reads its own variables when
a command runs, never at import): when the test process's own environment changed (an in-process test set a
variable and left it), a new zygote starts from it; a command given other variables (`env=`) runs in a plain
subprocess. TFT_TEST_NO_ZYGOTE=1 runs every command in a plain subprocess.

Protocol: the test writes one JSON line per command, {argv, cwd, env, folder}; the zygote forks, writes
`folder/pid`, and when the child ends `folder/status` (its wait status), each by an atomic rename. Commands may
overlap (the tests that run two at once): the zygote never waits on one child while others run.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRELOAD = ("torch", "transformers", "tft.cli", "tft.train.recipe", "tft.export.pipeline", "tft.verify")
VOLATILE = {"PYTEST_CURRENT_TEST"}  # changes with every test; read by nobody at import time

_SERVE = r'''
import atexit, gc, importlib, json, os, select, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
import transformers
transformers.TrainingArguments, transformers.Trainer, transformers.AutoModel  # resolve the lazy attributes


def put(path, text):
    try:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)
    except OSError:
        pass  # its test gave up on it (a timeout) and removed the folder


def child(job):
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(os.path.join(job["folder"], "out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(os.path.join(job["folder"], "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.argv = job["argv"]
    sys.path[0] = job["cwd"]  # `python -m` puts the working folder first
    import runpy
    import threading
    import traceback

    try:
        runpy.run_module("tft", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:  # as the interpreter reads it
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -2
    except BaseException:
        traceback.print_exc()
        code = 1
    # what the interpreter does at exit, short of tearing down every module: that would touch (and so copy)
    # every page shared with the zygote, about 1.4 s a command
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code == -2:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


gc.freeze()  # the preloaded objects stay out of every collection, so a child does not copy their pages
put(os.environ["TFT_ZYGOTE_READY"], str(os.getpid()))
running, pending, open_, parent = {}, b"", True, os.getppid()
while open_ or running:
    if os.getppid() != parent:  # the test worker died: its commands go with it (they are ours, not yet reaped)
        for pid in running:
            os.kill(pid, 9)
        os._exit(1)
    if open_ and select.select([0], [], [], 0.02)[0]:
        chunk = os.read(0, 65536)
        open_ = bool(chunk)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            job = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(job)
            running[pid] = job["folder"]
            put(os.path.join(job["folder"], "pid"), str(pid))
    elif not open_:
        select.select([], [], [], 0.02)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        folder = running.pop(pid, None)
        if folder is not None:
            put(os.path.join(folder, "status"), str(status))
'''


class Zygote:
    """One per test process: started on first use; it exits when the test process does (its stdin closes)."""

    _instance: "Zygote | None" = None
    _lock = threading.Lock()

    def __init__(self, env: dict):
        self.env = dict(env)
        self.root = Path(tempfile.mkdtemp(prefix="tft-zygote-"))
        atexit.register(shutil.rmtree, self.root, True)
        ready = self.root / "ready"
        self.process = subprocess.Popen([sys.executable, "-c", _SERVE, *PRELOAD], stdin=subprocess.PIPE,
                                        env={**self.env, "TFT_ZYGOTE_READY": str(ready)},
                                        cwd=Path(__file__).resolve().parents[1])
        self.env.pop("TFT_ZYGOTE_READY", None)
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test zygote did not start (exit {self.process.poll()})")
            time.sleep(0.05)
        self.jobs = 0

    @classmethod
    def get(cls, env: dict | None = None) -> "Zygote":
        """The zygote for the test process's environment `env`: a new one once it changed for good (an in-process
        test may set a variable and leave it; the old zygote ends when its last command does)."""
        env = env if env is not None else _base_env()
        with cls._lock:
            old = cls._instance
            if old is None or old.process.poll() is not None or not old.fits(env):
                if old is not None and old.process.poll() is None:
                    old.process.stdin.close()
                cls._instance = cls(env)
            return cls._instance

    def fits(self, env: dict) -> bool:
        keys = {k for k in set(env) | set(self.env) if not k.startswith("TFT_")} - VOLATILE
        return all(env.get(k) == self.env.get(k) for k in keys)

    def run(self, argv: list[str], cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", *argv]
        with self._lock:
            self.jobs += 1
            folder = self.root / str(self.jobs)
            folder.mkdir()
            job = {"argv": argv, "cwd": str(Path(cwd or os.getcwd()).resolve()), "env": env, "folder": str(folder)}
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
        try:
            deadline, status = time.monotonic() + timeout, folder / "status"
            while not status.exists():
                if self.process.poll() is not None:
                    raise RuntimeError("the test zygote died")
                if time.monotonic() > deadline:
                    while not (folder / "pid").exists() and self.process.poll() is None:
                        time.sleep(0.01)  # forked, not yet recorded
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int((folder / "pid").read_text()), 9)
                    raise subprocess.TimeoutExpired(args, timeout)
                time.sleep(0.02)
            code = os.waitstatus_to_exitcode(int(status.read_text()))
            return subprocess.CompletedProcess(args, code, _text(folder / "out"), _text(folder / "err"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _text(path: Path) -> str:
    """What `subprocess.run(text=True)` makes of the bytes: the locale's encoding, universal newlines."""
    data = path.read_bytes().decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


def _base_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(args: list[str], cwd=None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m tft *args` with its output captured as text, as `subprocess.run` returns it."""
    base = _base_env()
    full_env = {**base, **(env or {})}
    if os.environ.get("TFT_TEST_NO_ZYGOTE") != "1":
        zygote = Zygote.get(base)
        if zygote.fits(full_env):
            return zygote.run(["tft", *args], cwd, full_env, timeout)
    return subprocess.run([sys.executable, "-m", "tft", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=full_env)
