"""Finding Triton: the real `tritonserver` binary from the PyPI wheel `nvidia-pytriton`.

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
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from tft.errors import TftError
from tft.fsutil import writable_cache


class ServerError(TftError):
    """The embedded Triton could not start, or stopped."""


def pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServerError("the embedded Triton needs the `nvidia-pytriton` wheel: pip install 'tft-toolchain[serve]'") from None
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


def stub_safe(path: Path) -> bool:
    """Can Triton 2.51's Python backend start a model from this path? Its stub takes paths as space-separated
    arguments (a space breaks them: `stol`) and decodes them as ASCII (a non-ASCII character breaks it);
    Triton resolves links, so a link with a plain name does not help."""
    text = str(Path(path).resolve())
    return text.isascii() and not any(ch.isspace() for ch in text)


def backend_directory(root: Path | None = None) -> Path:
    """A folder laid out as Triton wants it: python/{libtriton_python.so, utils, stub} (symlinks)."""
    root = root or pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub})")
    base = writable_cache("triton-backends", version)
    if not stub_safe(base):  # the stub is started from here: a path it cannot take gets a plain one
        base = Path(tempfile.gettempdir()) / f"tft-triton-backends-{os.getuid()}" / version
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
