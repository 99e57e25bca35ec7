"""Download a task's public archive into the cache: progress bar, size/checksum check,
safe unpacking (no path traversal, no links), atomic rename into place."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from tft.errors import DownloadError
from tft.console import on_terminal
from tft.fsutil import atomic_dir, cache_root, file_lock, file_sha256
from tft.tasks import Archive

CHUNK = 1 << 16


def fetch_archive(name: str, archive: Archive, timeout: float = 60.0) -> Path:
    """Return the cached folder of `name`'s files, downloading and unpacking it once."""
    target = cache_root() / "datasets" / name
    if (target / ".complete").exists():
        return target
    # every rank of a torchrun launch on this node calls this: one downloads and unpacks, the others wait
    # and then find it complete
    with file_lock(cache_root() / "locks" / f"dataset-{name}.lock"):
        if (target / ".complete").exists():
            return target
        return _fetch(name, archive, target, timeout)


def _fetch(name: str, archive: Archive, target: Path, timeout: float) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.download-") as tmp:
        file = Path(tmp) / PurePosixPath(archive.url.split("?")[0]).name
        _download(archive.url, file, timeout)
        if archive.sha256:
            digest = file_sha256(file)
            if digest != archive.sha256:
                raise DownloadError(f"{archive.url}: sha256 {digest} does not match the expected {archive.sha256}")
        with atomic_dir(target, overwrite=True) as out:
            safe_extract(file, out)
            if archive.subdir and (out / archive.subdir).is_dir():
                _hoist(out / archive.subdir, out)
            else:
                entries = list(out.iterdir())
                if len(entries) == 1 and entries[0].is_dir():  # e.g. afqmc_public/train.json
                    _hoist(entries[0], out)
            (out / ".complete").write_text(archive.url + "\n")
    return target


def _download(url: str, dest: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "tft"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            expected = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, desc=f"downloading {dest.name}",
                      disable=not on_terminal(), leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: download failed ({reason}); pass --data-dir with the files instead") from None
    if expected is not None and received != expected:
        raise DownloadError(f"{url}: received {received} bytes, the server announced {expected}; try again")


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DownloadError(f"{archive}: refusing unsafe path {name!r} in archive")
    return path


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into `dest`, refusing absolute paths, `..` and links."""
    dest = Path(dest)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{archive}: corrupt member {bad!r} (CRC mismatch)")
            for info in zf.infolist():
                rel = _safe_member(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(f"{archive}: refusing symbolic link {info.filename!r} in archive")
                if info.is_dir():
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest / rel, "wb") as out:
                    shutil.copyfileobj(src, out)
        return
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError:
        raise DownloadError(f"{archive}: not a zip or tar archive") from None
    with tf:
        for member in tf.getmembers():
            rel = _safe_member(member.name, archive)
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(member) as src, open(dest / rel, "wb") as out:
                    shutil.copyfileobj(src, out)
            else:
                raise DownloadError(f"{archive}: refusing link or special file {member.name!r} in archive")


def _hoist(inner: Path, out: Path) -> None:
    """Move the files of the archive's inner folder up, so the split files sit at the top."""
    for item in inner.iterdir():
        shutil.move(str(item), str(out / item.name))
    inner.rmdir()
