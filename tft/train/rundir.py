"""What a run folder holds and whether this run may use it: new, resumed, started over, or refused.

A folder `tft train` writes carries `tft-run.json` (its settings, and `finished` once best/ is
saved); each checkpoint-N that the Trainer finished writing carries `.tft-complete`. An existing run
is continued only with `--resume`, replaced only with `--overwrite`; a folder of anything else is
refused, and a finished run asked to resume is reported as finished, not trained or summarised again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tft.errors import TftError
from tft.fsutil import OutputError, atomic_write_json, clear_own_dir

log = logging.getLogger("tft")

RUN_MARKER = "tft-run.json"
COMPLETE_MARKER = ".tft-complete"  # written after a checkpoint's last file: only marked ones are resumed
CLAIMED_ENV = "TFT_RUN_CLAIMED"  # set by the launcher for its torchrun ranks: the folder is already checked
# settings that must not change when a run is continued: a resumed run would mix two trainings
FIXED_ON_RESUME = ("task", "model", "data_dir", "max_seq_length", "text_field", "text_pair_field", "label_field",
                   "limit_train", "max_chars")
TOOL_FILES = {"best", "metrics.json", "train_log.jsonl", "tensorboard", "scratch_tokenizer", "training.png",
              RUN_MARKER}
TOOL_PATTERNS = (re.compile(r"checkpoint-\d+"), re.compile(r"launch_config\.node\d+\.yaml"), re.compile(r"\..*"))


def complete_checkpoints(output_dir: Path) -> list[Path]:
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and (path / COMPLETE_MARKER).exists():
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / RUN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_run_dir(out: Path) -> bool:
    """A folder that `tft train` wrote (the marker; or, from older versions, its outputs)."""
    return (out / RUN_MARKER).exists() or (out / "best" / "tft.json").exists() or bool(complete_checkpoints(out)) \
        or (out / "train_log.jsonl").exists() or (out / "scratch_tokenizer" / "tokenizer.json").exists()


def is_finished(out: Path) -> bool:
    marker = read_marker(out)
    if marker is not None:
        return bool(marker.get("finished"))
    return (out / "best" / "tft.json").exists() and (out / "metrics.json").exists()


def tool_entry(name: str) -> bool:
    """A name `tft train` writes in a run folder."""
    return name in TOOL_FILES or any(p.fullmatch(name) for p in TOOL_PATTERNS)


@dataclass
class Claim:
    resume_from: str | None = None
    finished: bool = False


def claim(out: Path, resume: str | None, overwrite: bool, settings: dict) -> Claim:
    """Decide what this run does with `out` (see the module docstring); raise one line if it may not."""
    out = Path(out)
    if os.environ.get(CLAIMED_ENV) == str(out.resolve()):
        overwrite = False  # the launcher checked (and cleared) the folder for its ranks
    elif out.exists() and not out.is_dir():
        raise OutputError(f"--output-dir {out}: is a file, expected a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not is_run_dir(out) and os.environ.get(CLAIMED_ENV) != str(out.resolve()):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(f"--output-dir {out}: exists and is not a tft run folder (it holds {shown}); tft never "
                          "replaces what it did not write: choose another folder")
    if entries and is_run_dir(out):
        if overwrite:
            clear_own_dir(out, tool_entry)
            return Claim()
        if resume is None:
            state = "a finished" if is_finished(out) else "an unfinished"
            raise OutputError(f"--output-dir {out}: holds {state} training run; add --resume auto to continue it, "
                              "--overwrite to start it over, or choose another folder")
        _check_same_settings(out, settings)
        if resume == "auto" and is_finished(out):
            return Claim(finished=True)
    if resume is None:
        return Claim()
    if resume == "auto":
        existing = complete_checkpoints(out) if out.is_dir() else []
        if not existing:
            log.info("--resume auto: no complete checkpoint in %s, starting from scratch", out)
            return Claim()
        return Claim(resume_from=str(existing[-1]))
    path = Path(resume)
    if not (path / COMPLETE_MARKER).exists() and not (path / "trainer_state.json").exists():
        raise TftError(f"--resume {path}: not a complete training checkpoint (expected a checkpoint-N folder)")
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TftError(f"--resume {path}: trainer_state.json is missing or unreadable; not a usable checkpoint") from None
    return Claim(resume_from=str(path))


def _check_same_settings(out: Path, settings: dict) -> None:
    recorded = (read_marker(out) or {}).get("settings")
    if not recorded:
        return
    for key in FIXED_ON_RESUME:
        if key in recorded and recorded[key] != settings.get(key):
            raise TftError(f"--resume: {out} was trained with --{key.replace('_', '-')} {recorded[key]!r}, this run "
                           f"asks for {settings.get(key)!r}; continue with the same value, or --overwrite to start over")


def mark(out: Path, settings: dict, finished: bool, metrics: dict | None = None) -> None:
    atomic_write_json(Path(out) / RUN_MARKER, {"format": "tft.run/1", "finished": finished, "settings": settings,
                                               **({"metrics": metrics} if metrics is not None else {})})
