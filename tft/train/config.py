"""Training options: one dataclass whose fields are the `tft train` flags and the YAML config keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from tft.errors import TftError


@dataclass
class TrainConfig:
    task: str | None = None
    data_dir: str | None = None
    model: str | None = None  # default: the task's; "scratch:tiny" builds a small offline model
    output_dir: str | None = None  # default: runs/<task>-<timestamp>
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int | None = None
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps (< 1) or a number of steps (>= 1)
    max_seq_length: int = 128
    seed: int = 42
    fp16: bool = False
    bf16: bool = False
    allow_fp32_fallback: bool = False
    eval_every: int | None = None  # steps; default: once per epoch
    save_total_limit: int = 2
    early_stopping: int | None = None
    resume: str | None = None  # "auto" or a checkpoint path
    limit_train: int | None = None
    limit_eval: int | None = None
    text_field: str | None = None
    text_pair_field: str | None = None
    label_field: str | None = None
    group_by_length: bool = True
    pad_to_max_length: bool = False  # the seed scripts' way; kept for benchmarks
    compile: bool = False
    workers: int = 0
    trust_remote_code: bool = False
    cache: bool = True
    logging_steps: int = 10
    plot: bool = True

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_yaml(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False), encoding="utf-8")


def load_yaml(path: str | Path) -> dict:
    """Read a config file; keys mirror the flags (dashes or underscores)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise TftError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TftError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise TftError(f"{path}: expected a mapping of option: value")
    out = {}
    known = TrainConfig.keys()
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise TftError(f"{path}: unknown option '{key}'")
        out[name] = value
    return out


def merge(file_values: dict, cli_values: dict) -> TrainConfig:
    """Defaults < config file < flags given on the command line."""
    values = {**file_values, **{k: v for k, v in cli_values.items() if v is not None}}
    try:
        return TrainConfig(**values)
    except TypeError as e:
        raise TftError(f"invalid training options: {e}") from None
