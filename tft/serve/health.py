"""Keeping served models answering: a canary inference per ensemble, a real reload of the steps whose
stub died, a restart when that does not help, and clean stops on signals.

A Python-backend stub that crashed leaves the model READY, so health is judged by a canary inference, not
by readiness. A load of a model whose files did not change is a no-op in Triton (the dead stub stays
dead), so a failed step is loaded with its own config plus a fresh parameter, which starts a new stub;
if that does not bring the canary back, the server is restarted."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

from tft.serve.server import TritonServer
from tft.serve.triton import ServerError

log = logging.getLogger("tft")


def _parent(pid: int) -> int:
    """The parent PID from /proc/<pid>/stat (0 once the process is gone); its name may hold spaces or ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2:].split()[1])


def stub_processes(model: str | None = None, under: int | None = None) -> list[int]:
    """PIDs of Python-backend stubs (optionally of one model, optionally only the descendants of process `under`:
    another server on the machine may serve a model of the same name), for the health loop's tests and faults."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmd or not cmd[0].endswith(b"triton_python_backend_stub"):
            continue
        if model is not None and not any(f"/{model}/".encode() in part for part in cmd):
            continue
        if under is not None:
            ancestor = int(proc.name)
            while ancestor > 1 and ancestor != under:
                ancestor = _parent(ancestor)
            if ancestor != under:
                continue
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

    def follow(self, client) -> list[str]:
        """Load what the repository commits now where it differs from what is served: a `tft serve build` or
        `tft serve rollback` into the live repository is served within one interval (Triton runs in explicit model
        control mode, so it would keep the old version). Skipped while a build holds the repository."""
        from tft.fsutil import OutputError, hold
        from tft.serve.records import read_serve_manifests

        followed = []
        try:
            with hold(self.server.repository, shared=True, option="--repository"):
                committed = read_serve_manifests(self.server.repository)
                headers = self.server.admin_headers() or None
                for ensemble, spec in list(self.canaries.items()):
                    record = committed.get(ensemble)
                    if record is None or record.get("version") == spec.get("version"):
                        continue
                    self._switch(client, ensemble, spec, record, headers)
                    log.warning("%s: the repository commits v%s now (v%s was served): loaded it", ensemble,
                                record["version"], spec.get("version"))
                    self.canaries[ensemble] = record
                    followed.append(ensemble)
        except OutputError:
            pass  # a build is writing: next interval
        except Exception as e:  # noqa: BLE001 - the canary below says whether what is served still answers
            log.error("health: could not load the repository's new state: %s", str(e).splitlines()[0][:300])
        return followed

    @staticmethod
    def _switch(client, ensemble: str, served: dict, record: dict, headers) -> None:
        """As a build commits, with no gap: each step loads its old and new versions together (a config override),
        the ensemble loads the new pins, then each step keeps only what the repository lists."""
        old = served.get("model_versions", {})
        new = record.get("model_versions", {})
        for model in record.get("steps", []):
            config = client.get_model_config(model, headers=headers, as_json=True)["config"]
            both = sorted({int(v) for v in (old.get(model), new.get(model)) if v is not None})
            config["version_policy"] = {"specific": {"versions": both}}
            client.load_model(model, headers=headers, config=json.dumps(config))
        client.load_model(ensemble, headers=headers)
        for model in record.get("steps", []):
            client.load_model(model, headers=headers)  # its config.pbtxt as committed: the new version only

    def run(self):
        client = self.server.client()
        while not self.stopped.wait(self.interval):
            if self.server.process is None or self.server.process.poll() is not None or self.restart_requested.is_set():
                continue
            self.follow(client)
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
