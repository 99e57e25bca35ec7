"""Outputs that are never half-written and never written over someone else's work.

The output policy, for every command that writes: a destination that does not exist is created
atomically (a temporary sibling, renamed into place); one that tft wrote before (its marker file is
there) is replaced only with `--overwrite`; anything else (a folder with other files, an input, a
checkpoint or run folder) is refused with one line and left untouched. `check_output_dir` and
`check_output_file` decide; `atomic_dir` and `atomic_write_*` write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tft.errors import TftError


def cache_root() -> Path:
    """The user cache (TFT_CACHE, default ~/.cache/tft): downloads, feature caches, logs, TensorRT timing caches."""
    return Path(os.environ.get("TFT_CACHE", Path.home() / ".cache" / "tft")).expanduser()


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


UMASK = _umask()  # files get 0666 & ~umask and folders 0777 & ~umask, as `touch`/`mkdir` would make them


class OutputError(TftError):
    """A destination that tft may not write (it holds other work, or is an input)."""


def _inside(path: Path, other: Path) -> bool:
    return path == other or path in other.parents


def _writable_parent(path: Path, option: str) -> None:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {parent} (permission denied)")


def check_output_dir(path, *, what: str, marker: str, option: str = "--output-dir", overwrite: bool = False,
                     protect=()) -> bool:
    """May `path` be written as a new `what`? Returns True when it exists and is to be replaced.

    Refused: a folder that holds anything but an earlier `what` (recognised by `marker`), an earlier
    one without `overwrite`, and any folder that is or contains one of `protect` (inputs, checkpoints).
    """
    path = Path(path)
    resolved = path.resolve()
    for p in protect:
        if p is not None and _inside(resolved, Path(p).resolve()):
            raise OutputError(f"{option} {path}: would replace {p}, an input of this command; choose another folder")
    if not path.exists():
        _writable_parent(path, option)
        return False
    if not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, expected a folder")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {path.parent} (permission denied)")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return True
    if marker in entries:
        if overwrite:
            return True
        raise OutputError(f"{option} {path}: holds an earlier {what}; add --overwrite to replace it, "
                          "or choose another folder")
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise OutputError(f"{option} {path}: exists and is not a {what} written by tft (it holds {shown}); "
                      "tft never replaces what it did not write: choose another folder")


def check_output_file(path, *, option: str = "-o", overwrite: bool = False, inputs=()) -> None:
    """A single output file: never one of the inputs, never a folder, an existing file only with --overwrite."""
    path = Path(path)
    for p in inputs:
        if p is not None and path.exists() and Path(p).exists() and os.path.samefile(path, p):
            raise OutputError(f"{option} {path}: is the input file; choose another output")
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path}: already exists; add --overwrite to replace it")
    if path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {path.parent} (permission denied)")
    if not path.exists():
        _writable_parent(path, option)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """mkdtemp (0700) opened up to what the user's umask gives a new folder, so Triton in a container
    or a colleague can read what we write."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~UMASK)
    return tmp


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary sibling folder; rename it to `final` only if the block succeeds.

    `overwrite=True` replaces an existing `final`: callers pass it only after `check_output_dir`
    said the folder is theirs to replace.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = make_temp_dir(final.parent, f".{final.name}.tmp-{os.getpid()}-")
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise OutputError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clear_own_dir(path: Path, ours, option: str = "--output-dir") -> None:
    """Empty a folder that tft wrote, for --overwrite: refused if it holds any entry `ours(name)` denies."""
    entries = sorted(p.name for p in Path(path).iterdir())
    foreign = [e for e in entries if not ours(e)]
    if foreign:
        raise OutputError(f"{option} {path}: --overwrite would delete {', '.join(foreign[:3])}, which tft did not "
                          "write; move it away or choose another folder")
    for name in entries:
        target = Path(path) / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive lock held while the block runs (flock: released by the kernel if the holder dies),
    so that ranks of a multi-process launch on one node do one job once while the others wait."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final: Path) -> None:
    """Delete what a killed writer of `final` left behind (its hidden temp folder), unless that writer lives."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name[len(f".{final.name}.tmp-"):].split("-", 1)[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in final.parent.glob(f".{final.name}.old-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
