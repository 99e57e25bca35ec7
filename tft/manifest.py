"""The manifest each stage writes and the next reads.

`tft train` writes `<checkpoint>/tft.json`; `tft export` reads it and writes `<export>/manifest.json`;
`tft serve` reads that. Both carry the task definition fields the next stage needs, so no flags repeat.
"""

from __future__ import annotations

import json
import platform
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
    if isinstance(data.get("data_dir"), str) and not Path(data["data_dir"]).is_absolute():
        # recorded relative: to the checkpoint, never to wherever the command runs
        data["data_dir"] = str((Path(directory) / data["data_dir"]).resolve())
    return data


TOKENIZER_FILE = "tokenizer.json"


def check_tokenizer_files(directory: str | Path, recorded: dict | None = None) -> None:
    """A checkpoint carries the tokenizer it was trained with; without it transformers would quietly build
    another one (a five-entry vocabulary: every character [UNK]) and every answer would be wrong. With the
    checkpoint manifest's `files` record, the tokenizer and weights must be the ones training wrote (another run's
    tokenizer.json copied in would export and evaluate, silently wrong)."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise TftError(f"{directory}: has no {TOKENIZER_FILE}, the tokenizer the model was trained with; copy the "
                       "tokenizer files back from the training run (its best/ folder has them)")
    from tft.fsutil import file_sha256

    for name, sha in sorted((recorded or {}).items()):
        here = Path(directory) / name
        if here.is_file() and file_sha256(here) != sha:
            what = "the tokenizer" if name == TOKENIZER_FILE else "the weights"
            raise TftError(f"{here}: is not {what} this checkpoint was trained with (its sha256 differs from the one "
                           f"{CHECKPOINT_MANIFEST} records); copy the files back from the training run's best/ folder")


def checkpoint_files(directory: str | Path) -> dict:
    """{file: sha256} of what identifies a checkpoint: its tokenizer, config and weights (recorded in tft.json)."""
    from tft.fsutil import file_sha256

    directory = Path(directory)
    names = [TOKENIZER_FILE, "config.json", *sorted(p.name for p in directory.glob("*.safetensors"))]
    return {name: file_sha256(directory / name) for name in names if (directory / name).is_file()}


def weights_fingerprint(files: dict | None) -> str | None:
    """One sha256 for a checkpoint's weights and tokenizer (the build puts it in the served model's settings, verify
    compares it with the checkpoint it is given); None for a checkpoint written before tft recorded its files."""
    import hashlib

    if not files:
        return None
    text = json.dumps(sorted(files.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the export manifest (`tft export` writes it, `tft serve` and `tft predict --onnx` read it) ---------------

EXPORT_MANIFEST = "manifest.json"


# field -> (type, required): what every reader of an export relies on
EXPORT_SCHEMA = {"format": str, "task": str, "kind": str, "labels": list, "inputs": list, "outputs": list,
                 "max_batch": int, "max_seq_length": int, "artifacts": list, "checkpoint_manifest": dict}
ARTIFACT_SCHEMA = {"name": str, "file": str, "precision": str}


def read_export_manifest(export_dir: str | Path) -> dict:
    path = Path(export_dir) / EXPORT_MANIFEST
    data = read_json_object(path, "a `tft export` folder")
    for key, kind in EXPORT_SCHEMA.items():
        if key not in data:
            raise TftError(f"{path}: field '{key}' is missing; is this a `tft export` manifest?")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise TftError(f"{path}: field '{key}' should be {kind.__name__}, found {type(data[key]).__name__}")
    if not data["format"].startswith("tft.export/"):
        raise TftError(f"{path}: format {data['format']!r} is not a tft export")
    if data["max_batch"] < 1 or data["max_seq_length"] < 1:
        raise TftError(f"{path}: max_batch and max_seq_length must be at least 1")
    for i, art in enumerate(data["artifacts"]):
        for key, kind in ARTIFACT_SCHEMA.items():
            if not isinstance(art, dict) or not isinstance(art.get(key), kind):
                raise TftError(f"{path}: artifacts[{i}].{key} is missing or not a {kind.__name__}")
        if "/" in art["file"] or art["file"].startswith("."):
            raise TftError(f"{path}: artifacts[{i}].file {art['file']!r} must be a file name inside the export")
    for i, item in enumerate(data["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TftError(f"{path}: inputs[{i}].name is missing")
    return data


# --- the build record (`tft serve build` writes <repository>/<name>/<version>/tft-serve.json) -----------------

SERVE_MANIFEST = "tft-serve.json"
# field -> type: what `tft serve start`, the health loop, `tft serve deploy` and the integrity check rely on
SERVE_SCHEMA = {"format": str, "ensemble": str, "steps": list}
SERVE_OPTIONAL = {"name": str, "version": int, "files": dict, "artifact": str, "canary": dict, "model_versions": dict}


def read_serve_record(path: str | Path) -> dict:
    """A build record, validated: one line naming the file and field when it is not one."""
    path = Path(path)
    data = read_json_object(path, "a model that `tft serve build` wrote")
    for key, kind in SERVE_SCHEMA.items():
        if not isinstance(data.get(key), kind):
            raise TftError(f"{path}: field '{key}' is missing or not a {kind.__name__}; is this a `tft serve build` "
                           "record?")
    if not data["format"].startswith("tft.serve/"):
        raise TftError(f"{path}: format {data['format']!r} is not a tft build record")
    for key, kind in SERVE_OPTIONAL.items():
        if key in data and data[key] is not None and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise TftError(f"{path}: field '{key}' should be {kind.__name__}, found {type(data[key]).__name__}")
    return data


def check_file(export_dir: Path, name: str, sha256: str | None) -> Path:
    """An export's file, present and (where the manifest records it) unchanged since export."""
    from tft.fsutil import file_sha256

    path = Path(export_dir) / name
    if not path.is_file():
        raise TftError(f"{path}: listed in {Path(export_dir) / EXPORT_MANIFEST} but missing")
    if sha256 and file_sha256(path) != sha256:
        raise TftError(f"{path}: its sha256 differs from the one {EXPORT_MANIFEST} records; the file was replaced "
                       "or damaged after export (export again)")
    return path


# an engine recorded as `hardware_compatible` (AMPERE_PLUS) is built for, and runs on, GPUs of this compute
# capability and newer (TensorRT's Engine Compatibility guide, "Hardware Compatibility")
AMPERE_PLUS_MIN_CAPABILITY = (8, 0)


def default_opt_shape(max_batch: int, max_len: int) -> tuple[int, int]:
    """The batch x length a TensorRT profile is tuned for when none is given: export's engines and the ONNX Runtime
    TensorRT accelerator a build configures both use it (short texts in small batches are the common request)."""
    return min(8, max_batch), min(128, max_len)


def default_artifact(manifest: dict) -> dict:
    for name in ("fp32", "fp32-optimized"):
        for art in manifest["artifacts"]:
            if art["name"] == name:
                return art
    raise TftError("the export has no fp32 ONNX artifact")


def serving_fields(manifest: dict) -> dict:
    """What serving needs of the trained task, from the export manifest alone: the fields exports record at
    their top level, or (exports written before they did) the checkpoint manifest nested in them."""
    nested = manifest.get("checkpoint_manifest", {})
    keys = ("word_joiner", "text_field", "text_pair_field", "label_field", "max_chars")
    return {k: manifest[k] if k in manifest else nested.get(k, " " if k == "word_joiner" else None) for k in keys}
