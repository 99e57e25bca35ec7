"""The embedded Triton: the real `tritonserver` binary from the PyPI wheel `nvidia-pytriton`.

That build (Triton 2.51) runs on the CPU with the Python backend only. What it needs, measured here:
  * `--backend-directory` must hold `python/` with libtriton_python.so, triton_python_backend_utils.py
    and the stub built for the running Python (we link them; nothing is copied);
  * the stub imports from the first `python3` on PATH, so the venv's bin goes first;
  * it loads `libpython3.X.so` through the dynamic linker, so LD_LIBRARY_PATH gets this Python's LIBDIR
    (a mismatched system libpython breaks `ssl` imports in the stub);
  * an absolute repository path, and `--exit-on-error=false` so a model with a backend this build
    lacks (onnxruntime, tensorrt) does not stop the others from loading.
With TFT_TRITON_ROOT set (inside NVIDIA's Triton container: /opt/tritonserver), that full install runs
instead, with its own backends, so `tft serve start` and `tft pipeline --backend tensorrt` serve engines.

Models are loaded in `explicit` control mode so that the health loop can reload one: a Python-backend
stub that crashed leaves the model READY, so health is judged by a canary inference, not by readiness.
A load of a model whose files did not change is a no-op in Triton (the dead stub stays dead), so a
failed step is unloaded and loaded again, which starts a new stub; if that does not bring the canary
back, the server is restarted. `tritonserver` gets SIGTERM when its parent dies (PR_SET_DEATHSIG), so a
killed `tft serve start` never leaves it holding the ports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tft.errors import TftError

log = logging.getLogger("tft")


class ServerError(TftError):
    """The embedded Triton could not start, or stopped."""


def pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServerError("the embedded Triton needs the `nvidia-pytriton` wheel: pip install 'tft[serve]'") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise ServerError(f"{root}/bin/tritonserver not found; reinstall nvidia-pytriton")
    return root


def system_triton() -> Path | None:
    """A full Triton install to run instead of the embedded one (NVIDIA's container: /opt/tritonserver, with
    the onnxruntime and tensorrt backends), named by TFT_TRITON_ROOT; None: the embedded Triton."""
    root = os.environ.get("TFT_TRITON_ROOT")
    if not root:
        return None
    root = Path(root)
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerError(f"TFT_TRITON_ROOT={root}: no bin/tritonserver there (NVIDIA's container has /opt/tritonserver)")
    if not (root / "backends").is_dir():
        raise ServerError(f"TFT_TRITON_ROOT={root}: no backends/ folder there")
    return root


def backend_directory(root: Path | None = None) -> Path:
    """A folder laid out as Triton wants it: python/{libtriton_python.so, utils, stub} (symlinks)."""
    root = root or pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub})")
    base = Path(os.environ.get("TFT_CACHE", Path.home() / ".cache" / "tft")) / "triton-backends" / version
    target = base / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in (root / "backends" / "python" / "libtriton_python.so",
                root / "backends" / "python" / "triton_python_backend_utils.py", stub):
        link = target / src.name
        if link.is_symlink() and os.readlink(link) == str(src):
            continue
        tmp = target / f".{src.name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(src)
        os.replace(tmp, link)  # atomic: concurrent starts never see a missing link
    return base


def server_env(python_env: Path | None = None) -> dict:
    """The stubs import from the first python3 on PATH: this venv's, or `python_env`'s (say, one holding
    only what a container will have)."""
    env = dict(os.environ)
    bin_dir = Path(python_env) / "bin" if python_env else Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if python_env:
        env.pop("PYTHONPATH", None)  # nothing of ours may leak into that environment
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent(parent: int):
    """preexec_fn: the child gets SIGTERM when the process that started it dies, even by SIGKILL."""
    def set_death_signal():
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:  # not Linux: the stop() paths still apply
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_death_signal


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> "Ports":
        return cls(free_port(host), free_port(host), free_port(host))


@dataclass
class TritonServer:
    """`tritonserver` as a child process: start(), wait_ready(), stop(); a context manager too."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    models: list[str] | None = None  # None: every model in the repository
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    python_env: Path | None = None  # a venv whose packages the Python stubs use instead of this one's
    process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    def command(self) -> list[str]:
        system = system_triton()
        root = system or pytriton_dir()
        # a full install's backends/ holds every backend as Triton lays them out; the wheel's needs assembling
        backends = root / "backends" if system else backend_directory(root)
        cache = [] if system else [f"--cache-directory={root / 'caches'}"]
        loads = [f"--load-model={m}" for m in self.models] if self.models else ["--load-model=*"]
        return [str(root / "bin" / "tritonserver"),
                f"--model-repository={Path(self.repository).resolve()}",
                f"--backend-directory={backends}", *cache,
                "--model-control-mode=explicit", *loads,
                "--exit-on-error=false", "--strict-readiness=true",
                f"--grpc-address={self.host}", f"--grpc-port={self.ports.grpc}",
                f"--http-address={self.host}", f"--http-port={self.ports.http}",
                f"--metrics-address={self.host}", f"--metrics-port={self.ports.metrics}",
                "--allow-gpu-metrics=false", "--log-verbose=0", *self.extra_args]

    def start(self) -> "TritonServer":
        repo = Path(self.repository)
        if not repo.is_dir():
            raise ServerError(f"{repo}: no such model repository (build one with `tft serve build`)")
        for name, port in (("grpc", self.ports.grpc), ("http", self.ports.http), ("metrics", self.ports.metrics)):
            if port_in_use(self.host, port):
                raise ServerError(f"{self.host}:{port} ({name}) is already in use; pick another with --{name}-port")
        if self.log_file is None:
            fd, path = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_file = Path(path)
        self._log = open(self.log_file, "ab")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=server_env(self.python_env), start_new_session=True,
                                        preexec_fn=_die_with_parent(os.getpid()))
        return self

    def restart(self, timeout: float = 120.0) -> list[str]:
        """Stop and start the same server (same ports and log); called from the thread that started it,
        since the parent-death signal follows the starting thread."""
        self.stop()
        self.start()
        return self.wait_ready(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_file).read_text(encoding="utf-8", errors="replace")
        except (OSError, TypeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _flag(self, name: str) -> str | None:
        for arg in self.extra_args:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None

    def tls(self) -> dict:
        """Client TLS options matching `--grpc-use-ssl` in the extra tritonserver flags."""
        if (self._flag("--grpc-use-ssl") or "").lower() not in ("true", "1"):
            return {}
        return {"ssl": True, "root_certificates": self._flag("--grpc-root-cert") or self._flag("--grpc-server-cert")}

    def admin_headers(self) -> dict:
        """The header that `--grpc-restricted-protocol=<protocols>:<key>=<value>` asks for, for our own calls."""
        headers = {}
        for arg in self.extra_args:
            if arg.startswith("--grpc-restricted-protocol="):
                _, _, rule = arg.partition("=")
                key, _, value = rule.partition(":")[2].partition("=")
                headers[f"triton-grpc-protocol-{key.strip().lower()}"] = value  # Triton's prefix for the key
        return headers

    def client(self):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url, **self.tls())

    def wait_ready(self, timeout: float = 120.0) -> list[str]:
        """Block until the server is live and the requested models are ready; return their names."""
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.process.returncode}:\n{self.log_tail()}")
            try:
                headers = self.admin_headers() or None
                if client.is_server_live(headers=headers):
                    index = client.get_model_repository_index(headers=headers).models
                    wanted = self.models or [m.name for m in index]
                    states = {m.name: m.state for m in index}
                    if all(states.get(m) == "READY" for m in wanted):
                        return wanted
                    failed = [m for m in wanted if states.get(m) == "UNAVAILABLE"]
                    if failed:
                        reasons = "; ".join(f"{m.name}: {m.reason}" for m in index if m.name in failed)
                        raise ServerError(f"model(s) failed to load: {reasons}")
            except ServerError:
                raise
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)  # Triton drains in-flight requests on SIGINT/SIGTERM
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def __enter__(self):
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


def stub_processes(model: str | None = None) -> list[int]:
    """PIDs of Python-backend stubs (optionally of one model), for the health loop's tests and faults."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"triton_python_backend_stub"):
            if model is None or any(f"/{model}/".encode() in part for part in cmd):
                pids.append(int(proc.name))
    return pids


class HealthLoop(threading.Thread):
    """Every `interval` s, a canary inference per ensemble; a failure reloads its component models.

    Triton keeps reporting a model READY after its Python stub died, so readiness alone cannot tell.
    """

    def __init__(self, server: TritonServer, canaries: dict, interval: float = 5.0, timeout: float = 10.0):
        super().__init__(daemon=True, name="tft-health")
        self.server, self.canaries, self.interval, self.timeout = server, canaries, interval, timeout
        self.stopped = threading.Event()
        self.restart_requested = threading.Event()  # the starting thread restarts the server (see restart())
        self.reloads: list[tuple[float, str]] = []

    def check(self, client, ensemble: str, spec: dict) -> str | None:
        """None if the canary is answered, else the error."""
        from tft.serve.client import canary_inputs

        try:
            client.infer(ensemble, canary_inputs(spec), client_timeout=self.timeout,
                         headers=self.server.admin_headers() or None)
            return None
        except Exception as e:  # any failure of the canary means: not healthy
            message = str(e).splitlines()[0][:300]
            log.warning("health: canary inference on %s failed: %s", ensemble, message)
            return message

    def reload(self, client, ensemble: str, spec: dict, error: str = "") -> bool:
        """Reload the failed steps for real, then check the canary again; False if it still fails.

        A plain load of unchanged files is a no-op in Triton (the dead stub stays dead), and an unload
        waits out the dead stub's 30 s timeout and takes the ensemble down with it. A load with the
        model's own config plus a fresh `tft_reload` parameter is a real reload: new instances (new
        stubs) replace the old ones with no gap for the ensemble."""
        headers = self.server.admin_headers() or None
        steps = spec.get("steps", [])
        # "Stub process 'x_model_0_0' is not healthy" names the instance: reload that step only
        named = [s for s in steps if f"'{s}_" in error]
        for model in named or steps:
            try:
                config = client.get_model_config(model, headers=headers, as_json=True)["config"]
                config.setdefault("parameters", {})["tft_reload"] = {"string_value": f"{time.time():.6f}"}
                client.load_model(model, headers=headers, config=json.dumps(config))
            except Exception as e:
                log.error("health: reload of %s failed: %s", model, str(e).splitlines()[0][:200])
        with contextlib.suppress(Exception):
            client.load_model(ensemble, headers=headers)  # a no-op when loaded; loads it if it was lost
        self.reloads.append((time.time(), ensemble))
        ok = self.check(client, ensemble, spec) is None
        log.warning("health: reloaded %s: %s", ", ".join(named or steps), "answering again" if ok else "still failing")
        return ok

    def run(self):
        client = self.server.client()
        while not self.stopped.wait(self.interval):
            if self.server.process is None or self.server.process.poll() is not None or self.restart_requested.is_set():
                continue
            for ensemble, spec in self.canaries.items():
                error = self.check(client, ensemble, spec)
                if error is not None and not self.reload(client, ensemble, spec, error):
                    log.error("health: %s did not recover by reloading; restarting Triton", ensemble)
                    self.restart_requested.set()
                    break

    def stop(self):
        self.stopped.set()


def serve_until_stopped(server: TritonServer, health: HealthLoop | None) -> None:
    """The starting thread's loop: restart the server when the health loop asks; raise if it exits."""
    while True:
        try:
            code = server.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if health is not None and health.restart_requested.is_set():
                server.restart()
                health.restart_requested.clear()
                log.warning("health: Triton restarted; every model is ready again")
            continue
        raise ServerError(f"tritonserver exited with status {code}:\n{server.log_tail()}")


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP stop the server cleanly, also when a script started us with `&`
    (a background job of a non-interactive shell inherits SIGINT ignored)."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
