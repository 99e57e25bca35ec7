"""What a build committed: reading each model's build record (`<name>/<version>/tft-serve.json`, the one
the ensemble's config.pbtxt names) and checking that every file it recorded is still what was written."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from tft.errors import TftError
from tft.fsutil import file_sha256
from tft.manifest import SERVE_MANIFEST, read_serve_record
from tft.serve.backends import RepositoryError
from tft.serve.layout import parse_pbtxt


def _record_of(model_dir: Path) -> dict | None:
    """The serve record of the version the ensemble's config.pbtxt points at (the committed one)."""
    config_path = model_dir / "config.pbtxt"
    candidates = []
    try:
        params = parse_pbtxt(config_path.read_text(encoding="utf-8")).parameters
        if "tft_record" in params:
            candidates.append(model_dir / params["tft_record"].string_value)
    except (OSError, text_format.ParseError):
        pass
    candidates.append(model_dir / SERVE_MANIFEST)  # repositories built before records were versioned
    for i, path in enumerate(candidates):
        if not path.exists() and i < len(candidates) - 1:
            continue
        try:
            return read_serve_record(path)
        except TftError as e:
            if i < len(candidates) - 1:  # the record the committed config names is damaged: say so
                raise RepositoryError(str(e)) from None
    return None


def read_serve_manifests(repository: str | Path) -> dict[str, dict]:
    """{ensemble name: its committed serve record} for every tft-built model in a repository."""
    out = {}
    repository = Path(repository)
    if not repository.is_dir():
        return out
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (model_dir / SERVE_MANIFEST).exists() or (model_dir / "config.pbtxt").exists():
            record = _record_of(model_dir)
            if record is not None and record.get("ensemble") == model_dir.name:
                out[record["ensemble"]] = record
    return out


def check_integrity(repository: str | Path) -> int:
    """Every file each committed build recorded is there with the sha256 it had; returns the files checked."""
    repository = Path(repository)
    checked = 0
    for name, record in read_serve_manifests(repository).items():
        for rel, sha in record.get("files", {}).items():
            path = repository / rel
            if not path.is_file():
                raise RepositoryError(f"{path}: missing; `tft serve build` wrote it for {name} "
                                      f"v{record.get('version')} (build again)")
            if file_sha256(path) != sha:
                raise RepositoryError(f"{path}: differs from what `tft serve build` wrote for {name} "
                                      f"v{record.get('version')} (sha256 changed); build again or restore it")
            checked += 1
    return checked


def owned_models(repository: Path) -> set[str]:
    """Models that tft built into this repository (every step of every recorded ensemble)."""
    owned = set()
    for name, record in read_serve_manifests(repository).items():
        owned |= {name, *record.get("steps", [])}
    return owned
