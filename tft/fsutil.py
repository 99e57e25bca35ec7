"""Outputs that are never half-written, never written by two commands at once, and never written over
someone else's work.

The output policy, for every command that writes: a destination that does not exist is created
atomically (a temporary sibling, renamed into place); a folder that tft wrote before carries one ownership
marker (`.tft-owned.json`: tft, the command, every file it wrote with its sha256) and is replaced only with
`--overwrite`, only while it holds nothing but those files, unchanged; anything else (a folder with other
files, a foreign or missing marker, an input, a checkpoint or run folder, a place inside a model
repository) is refused with one line and left untouched. `check_output_dir` and `check_output_file`
decide; `atomic_dir` and `atomic_write_*` write; `hold` keeps a destination to one writer at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from tft.errors import TftError

log = logging.getLogger("tft")
OWNED = ".tft-owned.json"  # the ownership marker of a folder tft wrote
REPOSITORY_MARKERS = ("tft-requirements.txt", "tft-serve.json")  # a model repository tft built, or one of its models


def cache_root() -> Path:
    """The user cache (TFT_CACHE, default ~/.cache/tft): downloads, feature caches, logs, TensorRT timing caches."""
    return Path(os.environ.get("TFT_CACHE", Path.home() / ".cache" / "tft")).expanduser()


_FALLBACKS: set = set()


def writable_cache(*parts: str) -> Path:
    """A folder under the user cache for what tft writes while it runs (Triton's logs, its backend links); where the
    cache cannot be written (a read-only home or root filesystem, as Kubernetes' readOnlyRootFilesystem gives), one
    under the temporary folder instead, said once. TFT_CACHE chooses the cache."""
    preferred = cache_root().joinpath(*parts)
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK | os.X_OK):
            return preferred
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"tft-cache-{os.getuid()}" / Path(*parts)
    fallback.mkdir(parents=True, exist_ok=True)
    if str(preferred) not in _FALLBACKS:
        _FALLBACKS.add(str(preferred))
        log.warning("%s cannot be written (a read-only home or cache?): using %s; set TFT_CACHE to a writable "
                    "folder to choose", preferred, fallback)
    return fallback


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


def command_line() -> str:
    return " ".join(["tft", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("tft") else " ".join(sys.argv)


def inside_repository(path) -> Path | None:
    """The model repository (or tft-built model folder) that `path` lies in, if any: no command writes there
    but `tft serve build` and `tft serve rollback`."""
    resolved = Path(path).resolve()
    for folder in resolved.parents:
        if any((folder / name).is_file() for name in REPOSITORY_MARKERS):
            return folder
    return None


def _refuse_repository(path: Path, option: str) -> None:
    repository = inside_repository(path)
    if repository is not None:
        raise OutputError(f"{option} {path}: is inside the model repository {repository}, which only `tft serve "
                          "build` writes; choose a folder outside it")


def mark_owned(folder, what: str) -> None:
    """Write `folder`'s ownership marker: tft, what it is, the command, and every file in it with its sha256."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != OWNED}
    atomic_write_json(folder / OWNED, {"format": "tft.owned/1", "tool": "tft", "what": what,
                                       "command": command_line(), "files": files})


def _owned_files(path: Path, what: str, option: str) -> dict:
    """The files tft recorded writing in `path`, or one line saying why the folder is not tft's `what`."""
    try:
        data = json.loads((path / OWNED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("tool") != "tft" or not isinstance(data.get("files"), dict):
        raise OutputError(f"{option} {path}: its {OWNED} is not tft's; tft never replaces what it did not write: "
                          "choose another folder")
    if data.get("what") != what:
        raise OutputError(f"{option} {path}: holds a {data.get('what')} written by tft, not a {what}; choose another "
                          "folder")
    return data["files"]


def check_output_dir(path, *, what: str, marker: str, option: str = "--output-dir", overwrite: bool = False,
                     protect=(), legacy=None) -> bool:
    """May `path` be written as a new `what`? Returns True when it exists and is to be replaced.

    Replaced: only a folder whose ownership marker says tft wrote it as a `what`, holding nothing but the
    files it lists, each unchanged, and only with `overwrite`. Refused: anything else (a folder with other
    files, with `marker` but no ownership marker, a foreign marker), any folder that is or contains one of
    `protect` (inputs, checkpoints), and any place inside a model repository.
    """
    path = Path(path)
    resolved = path.resolve()
    _refuse_unrenamable(path, resolved, option)
    for p in protect:
        if p is not None and _inside(resolved, Path(p).resolve()):
            raise OutputError(f"{option} {path}: would replace {p}, an input of this command; choose another folder")
    _refuse_repository(path, option)
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
    if OWNED not in entries:
        unproven = legacy(path, entries) if marker in entries and legacy is not None else "no record"
        if unproven is None:
            # written by a tft before ownership markers, proven by content (legacy names the first file it cannot)
            if overwrite:
                return True
            raise OutputError(f"{option} {path}: holds an earlier {what}; add --overwrite to replace it, "
                              "or choose another folder")
        if marker in entries and legacy is not None:
            raise OutputError(f"{option} {path}: holds a {what} without {OWNED} (the record of what tft wrote), and "
                              f"{unproven}; tft replaces only what it can prove it wrote: move it away or choose "
                              "another folder")
        if marker in entries:
            raise OutputError(f"{option} {path}: holds a {what} without {OWNED}, the record of what tft wrote (an "
                              "older tft, or not tft's); tft replaces only what it recorded: move it away or choose "
                              "another folder")
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(f"{option} {path}: exists and is not a {what} written by tft (it holds {shown}); "
                          "tft never replaces what it did not write: choose another folder")
    files = _owned_files(path, what, option)
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != OWNED}
    foreign = sorted(present - set(files))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputError(f"{option} {path}: holds {shown}, which tft did not write; tft replaces only the files it "
                          "wrote: move those away or choose another folder")
    changed = sorted(name for name in present if file_sha256(path / name) != files[name])
    if changed:
        raise OutputError(f"{option} {path}: {changed[0]} was changed after tft wrote it; tft replaces only its own "
                          "unchanged files: move it away or choose another folder")
    if not overwrite:
        raise OutputError(f"{option} {path}: holds an earlier {what}; add --overwrite to replace it, "
                          "or choose another folder")
    return True


def written_in_place(path) -> bool:
    """A character device or a FIFO (`-o /dev/stdout`, `/dev/null`, a named pipe): what the user asked is to write
    into it, so it is opened and written, never replaced by a file, and no lock file is put beside it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def real_output(path) -> Path:
    """The file tft writes for `path`: a symlink's target (the link stays a link), else `path` itself."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)


def _refuse_unrenamable(path: Path, resolved: Path, option: str) -> None:
    """A folder tft writes is built beside it and renamed into place: the current folder, `/`, a mount point or a
    name ending in `.`/`..` cannot be (the rename would fail after all the work)."""
    if resolved == Path.cwd().resolve() or path.name in ("", ".", "..") or resolved.parent == resolved:
        raise OutputError(f"{option} {path}: is the current folder (or ends in . or ..); tft writes a new folder and "
                          "renames it into place: give a folder name inside it, e.g. {option} ./out".replace(
                              "{option}", option))
    if resolved.exists() and os.path.ismount(resolved):
        raise OutputError(f"{option} {path}: is a mount point, which cannot be replaced by a rename; give a folder "
                          "inside it")


def check_free_space(path, needed: int, option: str = "--output-dir", what: str = "it") -> None:
    """Refuse before the work when the disk holding `path` has less free room than `needed` bytes (an estimate of
    what will be written), naming the path and both figures."""
    probe = Path(path).resolve()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise OutputError(f"{option} {path}: {free / 2**20:,.0f} MiB free on its disk, {what} needs about "
                          f"{needed / 2**20:,.0f} MiB; free some room or choose another disk")


def check_output_file(path, *, option: str = "-o", overwrite: bool = False, inputs=()) -> None:
    """A single output file: never one of the inputs, never a folder, an existing file only with --overwrite; a
    character device or a FIFO is written in place, any other special file is refused."""
    path = Path(path)
    if written_in_place(path):
        return
    if path.exists() and not path.is_dir() and not path.is_file():
        raise OutputError(f"{option} {path}: is a special file (a block device or a socket), not one tft writes; "
                          "choose a file name")
    for p in inputs:
        if p is not None and path.exists() and Path(p).exists() and os.path.samefile(path, p):
            raise OutputError(f"{option} {path}: is the input file; choose another output")
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder, expected a file name")
    _refuse_repository(path, option)
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
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, owned_as: str | None = None):
    """Yield a temporary sibling folder; rename it to `final` only if the block succeeds.

    `overwrite=True` replaces an existing `final`: callers pass it only after `check_output_dir`
    said the folder is theirs to replace. `owned_as`: write the folder's ownership marker (what it is,
    every file with its sha256) before it is renamed into place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = make_temp_dir(final.parent, f".{final.name}.tmp-{os.getpid()}-")
    try:
        try:
            yield tmp
            if owned_as:
                mark_owned(tmp, owned_as)
        except OSError as e:
            if e.filename and Path(e.filename).is_relative_to(tmp):
                # a write into the temporary folder failed (a full disk, say): name the destination, not the temp
                raise OutputError(f"{final}: cannot write it ({e.strerror}); nothing was changed there") from None
            raise
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


def _lock_path(destination: Path) -> Path:
    return destination.parent / f".{destination.name}.tft-lock"


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another tft command"
    return f"pid {holder['pid']} ({holder.get('command') or 'tft'})"


@contextlib.contextmanager
def hold(destination, *, wait: bool = False, shared: bool = False, option: str = "--output-dir",
         wait_option: str | None = "--wait"):
    """Keep `destination` to one writer: an advisory lock (flock) on `.<name>.tft-lock` in its parent, naming
    the holder's pid and command. A second writer gets one line naming the holder (or waits, with `wait`).
    The lock is keyed by the real path (symlinks and `..` resolved), so two names of one folder share it.
    The kernel releases the lock of a holder that dies; the next writer says it took it over. `shared`:
    a reader (`tft serve start` loading a repository) that writers wait for, beside other readers. The lock
    file is removed by the last holder that lets go cleanly, so nothing is left beside the user's files."""
    import fcntl

    if written_in_place(destination):  # -o /dev/stdout: nothing to keep to one writer, no lock file in /dev
        yield
        return
    # the real folder, whatever name it is reached by: a symlinked or `..` name of it gets the same lock
    destination = Path(os.path.realpath(destination))
    if not shared:  # a folder inside one another command writes, or one holding such a folder: never both at once
        nested = nested_writer(destination)
        if nested:
            raise OutputError(f"{option} {destination}: {nested}; wait for it to finish, or choose another folder")
    lock = _lock_path(destination)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a+", encoding="utf-8")
        except OSError as e:
            if shared:  # a reader of a read-only place: nobody can write there either
                yield
                return
            raise OutputError(f"{option} {destination}: cannot lock it ({e.strerror}: {lock})") from None
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_holder(handle))
            if not wait:
                handle.close()
                advice = f", or add {wait_option}" if wait_option else ""  # only what the command has
                raise OutputError(f"{option} {destination}: in use by {holder}; wait for it to finish{advice}"
                                  ) from None
            log.warning("%s: waiting for %s to finish", destination, holder)
            fcntl.flock(handle.fileno(), mode)
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the holder before us removed the file as we waited on it: lock the one there now
    with handle:
        previous = _holder(handle)
        if not shared:
            if previous.get("pid") and not previous.get("shared") and previous["pid"] != os.getpid():
                log.warning("%s: took over the lock of %s, which stopped without releasing it", destination,
                            _describe(previous))
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "command": command_line(), "since": time.time()}))
            handle.flush()
        elif not previous.get("pid"):
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "command": command_line(), "shared": True}))
            handle.flush()
        try:
            yield
        finally:
            try:  # the last holder (a reader may share it) removes the file, then lets go
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                with contextlib.suppress(OSError):
                    lock.unlink()
            except BlockingIOError:
                pass  # another reader still holds it
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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


NESTED_SCAN_DEPTH, NESTED_SCAN_ENTRIES = 3, 5000  # how far into a destination its writers are looked for


def nested_writer(destination: Path) -> str | None:
    """Another live command writing a folder around `destination` or inside it (a `tft train --overwrite` of a run
    folder while an export writes into it), or None. Commands of this process's own lineage (a pipeline and the
    training it launches) are not others. Read from the lock files' contents, without locking them."""
    mine = _lineage()

    def writer(lock: Path) -> dict | None:
        try:
            holder = json.loads(lock.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return None
        pid = holder.get("pid") if isinstance(holder, dict) else None
        if not isinstance(pid, int) or holder.get("shared") or pid in mine or not pid_alive(pid):
            return None
        return holder

    for folder in destination.parents:
        if folder.parent == folder:
            break
        holder = writer(_lock_path(folder))
        if holder:
            return f"inside {folder}, which {_describe(holder)} is writing"
    if destination.is_dir():
        seen = 0
        for root, dirs, files in os.walk(destination):
            depth = len(Path(root).relative_to(destination).parts)
            if depth >= NESTED_SCAN_DEPTH:
                dirs[:] = []
            for name in files:
                if name.startswith(".") and name.endswith(".tft-lock"):
                    holder = writer(Path(root) / name)
                    if holder:
                        inner = Path(root) / name[1:-len(".tft-lock")]
                        return f"holds {inner}, which {_describe(holder)} is writing"
            seen += len(files) + len(dirs)
            if seen > NESTED_SCAN_ENTRIES:
                break
    return None


def _lineage() -> set[int]:
    """This process and its ancestors (Linux /proc; just this process elsewhere)."""
    pids, pid = {os.getpid()}, os.getpid()
    for _ in range(64):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        pids.add(pid)
    return pids


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
    """`path` complete or untouched: a temporary sibling renamed into place (through a symlink to its target); a
    device or FIFO is written in place (written_in_place)."""
    if written_in_place(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    path = real_output(path)
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
