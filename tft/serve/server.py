"""The embedded Triton as a child process: start, wait until the models are ready, stop (tft/serve/triton.py
finds the binary and its environment; tft/serve/health.py keeps the models answering).

Models are loaded in `explicit` control mode so that the health loop can reload one. `tritonserver` gets
SIGTERM when its parent dies (PR_SET_DEATHSIG), so a killed `tft serve start` never leaves it holding the
ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tft.fsutil import writable_cache
from tft.serve.backends import launch_env, launch_flags, ready_budget
from tft.serve.triton import ServerError, backend_directory, pytriton_dir, server_env, stub_safe, system_triton

log = logging.getLogger("tft")


def _die_with_parent(parent: int):
    """preexec_fn: the child gets SIGTERM when the process that started it dies, even by SIGKILL.

    The function runs in the forked child before exec, where only one thread of a multithreaded parent (a training
    run's OpenMP pool, gRPC's threads, the health loop) lives on: the library is loaded and prctl looked up here, in
    the parent, so the child only calls it (dlopen or an import there could wait on a lock that a vanished thread
    held, and the parent would wait on the child for ever)."""
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the stop() paths still apply
        return None
    pdeathsig, sigterm = 1, int(signal.SIGTERM)  # PR_SET_PDEATHSIG

    def set_death_signal():
        prctl(pdeathsig, sigterm)
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


# Triton's server.cc logs this at shutdown once no request is in flight (then it unloads the models)
DRAINED = "Found 0 model versions that have in-flight inferences"
LOAD_ERROR_RE = re.compile(r'^E\S* \S+ \d+ model_repository_manager\.cc:\d+\] "(.+)"$')


@dataclass
class TritonServer:
    """`tritonserver` as a child process: start(), wait_ready(), stop(); a context manager too."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    models: list[str] | None = None  # None: every model in the repository
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    ready_timeout: float | None = None  # None: what the builds need (a TensorRT warm-up waits longer)
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
                "--allow-gpu-metrics=false", "--log-verbose=0", *self.build_flags(system), *self.extra_args]

    def records(self) -> list[dict]:
        from tft.serve.records import read_serve_manifests

        try:
            return list(read_serve_manifests(self.repository).values())
        except Exception:  # noqa: BLE001 - preflight and the integrity check say what is wrong with the repository
            return []

    def build_flags(self, system) -> list[str]:
        """What the committed builds need from every launcher (tft.serve.backends.launch_flags); the embedded Triton
        has no tensorrt backend to configure."""
        flags = launch_flags(self.records()) if system else []
        return [f for f in flags if f not in self.extra_args]

    def preflight(self) -> None:
        """What would stop Triton before it starts, said at once in one line."""
        repo = Path(self.repository)
        if not repo.is_dir():
            raise ServerError(f"{repo}: no such model repository (build one with `tft serve build`)")
        if system_triton() is None and not stub_safe(repo):
            raise ServerError(f"{repo.resolve()}: the embedded Triton's Python backend cannot start models from a path "
                              "with spaces or non-ASCII characters (its stub splits and ASCII-decodes paths, and Triton "
                              "resolves links); build or move the repository to a plain path")

    def start(self) -> "TritonServer":
        self.preflight()
        for name, port in (("grpc", self.ports.grpc), ("http", self.ports.http), ("metrics", self.ports.metrics)):
            if port_in_use(self.host, port):
                raise ServerError(f"{self.host}:{port} ({name}) is already in use; pick another with --{name}-port")
        if self.log_file is None:  # in the user cache, named by time and pid: never loose in the temporary folder
            logs = writable_cache("logs")
            self.log_file = logs / f"tritonserver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self._log = open(self.log_file, "ab")
        env = {**launch_env(self.records()), **server_env(self.python_env)}  # the user's own setting wins
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True,
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

    def load_failure(self) -> str | None:
        """Why Triton could not load every model, from its log ("failed to load all models"), in one line."""
        text = self.log_tail(400)
        if "failed to load all models" not in text:
            return None
        for line in text.splitlines():
            match = LOAD_ERROR_RE.search(line)
            if match:
                return match.group(1)
        return "see " + str(self.log_file)

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

    def wait_ready(self, timeout: float | None = None) -> list[str]:
        """Block until the server is live and the requested models are ready (within `ready_timeout`, or what the
        builds need: tft.serve.backends.ready_budget); return their names."""
        timeout = timeout or self.ready_timeout or ready_budget(self.records())
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
                    reason = self.load_failure()
                    if reason and not any(states.get(m) == "LOADING" for m in wanted):
                        # an ensemble that cannot load has no state at all: Triton says why only in its log
                        raise ServerError(f"model(s) failed to load: {reason}")
            except ServerError:
                raise
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0, unload_grace: float = 5.0) -> None:
        """SIGINT, as Triton asks: it closes its endpoints and drains in-flight requests (up to its 30 s exit
        timeout), then unloads the models. A model whose Python stub died and was reloaded never finishes
        unloading, and Triton would wait out the whole timeout for it: once its log says nothing is in flight
        any more, the unloads get `unload_grace` seconds, then the process group is killed (no request is left
        to lose by then)."""
        if self.process is None or self.process.poll() is not None:
            return
        since = self._log_size()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)
        deadline, drained_at = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                self.process.wait(0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if drained_at is None and DRAINED in self._log_since(since):
                drained_at = time.monotonic()
            if drained_at is not None and time.monotonic() - drained_at > unload_grace:
                break
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_file)
        except (OSError, TypeError):
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except (OSError, TypeError):
            return ""

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


