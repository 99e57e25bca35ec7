"""The manifest each stage writes and the next reads.

`tft train` writes `<checkpoint>/tft.json`; `tft export` reads it and writes `<export>/manifest.json`;
`tft serve` reads that. Both carry the task definition fields the next stage needs, so no flags repeat.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from tft import __version__
from tft.errors import TftError
from tft.fsutil import atomic_write_json

CHECKPOINT_MANIFEST = "tft.json"
CHECKPOINT_FORMAT = "tft.checkpoint/1"
CHECKPOINT_KEYS = ("format", "task", "kind", "labels", "max_seq_length", "text_field", "text_pair_field",
                   "model_input_names", "main_metric")


def versions() -> dict:
    import tokenizers
    import torch
    import transformers

    return {"tft": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(["tft", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("tft") else " ".join(sys.argv)


def write_checkpoint_manifest(directory: Path, data: dict) -> None:
    atomic_write_json(Path(directory) / CHECKPOINT_MANIFEST, {"format": CHECKPOINT_FORMAT, **data})


def read_json_object(path: Path, what: str) -> dict:
    """A manifest file as a dict, or one line saying why not (missing, unreadable, not an object)."""
    if not path.exists():
        raise TftError(f"{path}: not found; is {path.parent} {what}?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TftError(f"{path}: unreadable manifest ({e})") from None
    except OSError as e:
        raise TftError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise TftError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_checkpoint_manifest(directory: str | Path) -> dict:
    path = Path(directory) / CHECKPOINT_MANIFEST
    data = read_json_object(path, "a `tft train` checkpoint (its best/ folder)")
    missing = [k for k in CHECKPOINT_KEYS if k not in data]
    if missing:
        raise TftError(f"{path}: manifest lacks {', '.join(missing)}")
    if data["format"] != CHECKPOINT_FORMAT:
        raise TftError(f"{path}: format {data['format']!r} is not {CHECKPOINT_FORMAT!r}")
    return data
