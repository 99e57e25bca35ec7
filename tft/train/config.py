"""Training options: one typed layer for `tft train` flags and YAML config keys alike.

`TrainConfig` holds the defaults; `RULES` says, per option, its type, its range and its help; the
click options of `tft train` (and `tft pipeline`) are generated from both by `tft.options.Options`, and
every value, from a flag or a config file, goes through `parse`, so a bad one is one line naming the option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from tft.errors import TftError
from tft.heads import HEADS, parse_filter_sizes
from tft.options import Options, Rule, flag  # noqa: F401 - flag is part of this module's interface

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
MAX_SEQ_LENGTH_LIMIT = 8192  # above any BERT-class encoder's positions; a typo here must not allocate 160 GB


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
    lr_scheduler: str = "linear"  # the Hugging Face Trainer's schedule names
    max_seq_length: int = 128
    head: str = "linear"  # linear: the family's own head; cnn, lstm, gru over the token states (tft/heads.py)
    head_dropout: float = 0.1
    cnn_filter_sizes: str = "2,3,4"
    cnn_filters: int = 128
    rnn_hidden: int = 256
    rnn_layers: int = 1
    rnn_bidirectional: bool = True
    seed: int = 42
    precision: str | None = None  # auto | fp32 | fp16 | bf16; None: auto, or what --fp16/--bf16 say
    fp16: bool = False
    bf16: bool = False
    allow_fp32_fallback: bool = False
    force_bf16: bool = False  # bf16 even where the hardware emulates it (slow)
    eval_every: int | None = None  # steps; default: once per epoch
    save_total_limit: int = 2
    early_stopping: int | None = None
    resume: str | None = None  # "auto" or a checkpoint path
    overwrite: bool = False
    wait: bool = False  # another command training into the same folder: wait for it instead of refusing
    limit_train: int | None = None
    limit_eval: int | None = None
    max_chars: int | None = None  # characters per text kept before tokenizing; default 32 x max_seq_length
    text_field: str | None = None
    text_pair_field: str | None = None
    label_field: str | None = None
    multi_label: bool = False  # generic tasks: any number of labels per text (a JSON list, or joined in a CSV cell)
    label_separator: str | None = None  # multi-label CSV/TSV cells: the labels joined by it (default ",")
    threshold: float | None = None  # multi-label: a label is answered when its score reaches it (default 0.5)
    tune_thresholds: bool = False  # multi-label: per-label thresholds chosen on dev after training
    group_by_length: bool = True
    pad_to_max_length: bool = False  # the seed scripts' way; kept for benchmarks
    compile: bool = False
    fast_dropout: bool = True  # CPU runs: dropout masks drawn by NumPy (tft/train/cpu_step.py)
    workers: int = 0
    trust_remote_code: bool = False
    skip_preflight: bool = False  # the model checks before the first step (tft/train/preflight.py)
    cache: bool = True
    logging_steps: int = 10
    plot: bool = True

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def task_options(self) -> dict:
        """What the user said about their own files and kind (generic tasks): `Task.with_fields` takes them."""
        return {"text_field": self.text_field, "text_pair_field": self.text_pair_field, "label_field": self.label_field,
                "multi_label": self.multi_label, "label_separator": self.label_separator, "threshold": self.threshold,
                "tune_thresholds": self.tune_thresholds}

    def to_yaml(self, path: Path) -> None:
        from tft.fsutil import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))


RULES: dict[str, Rule] = {
    "task": Rule(str, "Task name (see `tft tasks`)."),
    "data_dir": Rule(str, "Folder with the split files (default: the task's public download).", metavar="DIR"),
    "model": Rule(str, "Hugging Face model name or local path; `scratch:tiny` for an offline smoke model. "
                       "Default: the task's."),
    "output_dir": Rule(str, "Run folder. Default: runs/<task>-<timestamp>.", metavar="DIR"),
    "epochs": Rule(float, "Training epochs.", low=0, above=True),
    "max_steps": Rule(int, "Stop after this many optimizer steps (overrides --epochs; -1: off).", low=-1),
    "batch_size": Rule(int, "Per-device batch size.", low=1, high=65536),
    "eval_batch_size": Rule(int, "Per-device eval batch size.  [default: 2x batch size]", low=1, high=65536),
    "grad_accum": Rule(int, "Gradient accumulation steps.", low=1, high=65536),
    "lr": Rule(float, "Peak learning rate.", low=0, high=10, above=True),
    "weight_decay": Rule(float, "AdamW weight decay.", low=0, high=10),
    "warmup": Rule(float, "Warm-up: a fraction of steps (<1) or a step count.", low=0),
    "lr_scheduler": Rule(str, "Learning-rate schedule after the warm-up (the Hugging Face Trainer's): linear decay to 0, "
                              "cosine, cosine_with_restarts, polynomial, constant (no warm-up), constant_with_warmup.",
                         choices=LR_SCHEDULERS),
    "max_seq_length": Rule(int, "Truncate inputs to this many tokens (at most the model's positions).", low=8,
                           high=MAX_SEQ_LENGTH_LIMIT),
    "head": Rule(str, "Classifier on the encoder: linear (the model family's own), cnn (TextCNN over the token states), "
                      "lstm or gru (recurrent, over each row's real tokens); for classification, regression and NER.",
                 choices=HEADS),
    "head_dropout": Rule(float, "--head cnn/lstm/gru: dropout before the classifier (and between recurrent layers); "
                               "below 1 (at 1 the head sees only zeros and never learns).",
                         low=0, high=1, below=True),
    "cnn_filter_sizes": Rule(str, "--head cnn: kernel widths in tokens, comma-separated.", metavar="2,3,4"),
    "cnn_filters": Rule(int, "--head cnn: filters per width.", low=1, high=4096),
    "rnn_hidden": Rule(int, "--head lstm/gru: hidden size per direction.", low=1, high=8192),
    "rnn_layers": Rule(int, "--head lstm/gru: stacked layers.", low=1, high=8),
    "rnn_bidirectional": Rule(bool, "--head lstm/gru: read each text both ways."),
    "seed": Rule(int, "Random seed.", low=0, high=2**32 - 1),
    "precision": Rule(str, "auto (bf16 on Ampere+ GPUs and on CPUs with AVX-512 BF16 or AMX, fp16 on older GPUs, "
                           "fp32 otherwise; says what it chose), fp32, fp16 or bf16.  [default: auto]",
                      metavar="auto|fp32|fp16|bf16"),
    "fp16": Rule(bool, "CUDA mixed precision with loss scaling."),
    "bf16": Rule(bool, "bfloat16 mixed precision (Ampere+ GPUs, or CPU autocast)."),
    "allow_fp32_fallback": Rule(bool, "Train in fp32 when --fp16/--bf16 is unsupported here.", flag=True),
    "force_bf16": Rule(bool, "bf16 even on hardware that only emulates it (a CPU without AVX-512 BF16 or AMX, a GPU "
                             "before Ampere): many times slower.", flag=True),
    "eval_every": Rule(int, "Evaluate and checkpoint every N steps.  [default: each epoch]", low=1),
    "save_total_limit": Rule(int, "Checkpoints to keep (the best is always kept).", low=1),
    "early_stopping": Rule(int, "Stop after PATIENCE evaluations without improvement.", low=1, metavar="PATIENCE"),
    "resume": Rule(str, "Continue this run folder from a checkpoint, or from its newest complete one (`auto`).",
                   metavar="PATH|auto"),
    "overwrite": Rule(bool, "Start over in an earlier run folder of tft's (its outputs are replaced).", flag=True),
    "wait": Rule(bool, "If another command is writing the run folder, wait for it instead of stopping.", flag=True),
    "limit_train": Rule(int, "Use the first N training examples (quick runs).", low=1, metavar="N"),
    "limit_eval": Rule(int, "Use the first N dev examples.", low=1, metavar="N"),
    "max_chars": Rule(int, "Characters kept per text before tokenizing (as serving does).  "
                           "[default: 32 x max seq length, at least 4096]", low=1, metavar="N"),
    "text_field": Rule(str, "Generic csv/jsonl tasks: text column."),
    "text_pair_field": Rule(str, "Generic csv/jsonl tasks: second text column (makes it a pair task)."),
    "label_field": Rule(str, "Generic csv/jsonl tasks: label column."),
    "multi_label": Rule(bool, "Generic csv/jsonl tasks: any number of labels per text (JSON: a list in the label field; "
                              "CSV: labels joined by --label-separator); sigmoid scores, micro/macro F1.", flag=True),
    "label_separator": Rule(str, "With --multi-label: what joins the labels in a CSV cell (default ',')."),
    "threshold": Rule(float, "With --multi-label: a label is answered when its score reaches this (default 0.5).",
                      low=0.0, high=1.0, above=True, below=True),
    "tune_thresholds": Rule(bool, "With --multi-label: after training, choose each label's threshold on the dev split "
                                  "(its best F1) and record them; the dev figure is then optimistic: judge on test.",
                            flag=True),
    "group_by_length": Rule(bool, "Batch similar lengths together."),
    "pad_to_max_length": Rule(bool, "Pad every example to --max-seq-length (slow; for comparison).", flag=True),
    "compile": Rule(bool, "torch.compile the model.", flag=True),
    "fast_dropout": Rule(bool, "CPU runs: dropout masks drawn by NumPy's SFC64 generator, 3x faster than PyTorch's "
                               "(the same Bernoulli, its probability rounded to 1/65536; seeded from PyTorch's "
                               "generator); --no-fast-dropout: PyTorch's own."),
    "workers": Rule(int, "Data-loader worker processes.", low=0, high=256),
    "trust_remote_code": Rule(bool, "Allow model code from the hub (off by default).", flag=True),
    "skip_preflight": Rule(bool, "Skip the checks of the model before training (a train step, padding, a trial ONNX "
                                 "export: seconds); `tft check-model` runs them alone.", flag=True),
    "cache": Rule(bool, "Reuse and write cached features."),
    "logging_steps": Rule(int, "Log loss and learning rate every N steps.", low=1),
    "plot": Rule(bool, "Write training.png at the end."),
}
assert set(RULES) == TrainConfig.keys(), "every TrainConfig field needs a rule"
DEFAULTS = TrainConfig()


def check(cfg: TrainConfig) -> None:
    """Rules between options."""
    if cfg.fp16 and cfg.bf16:
        raise TftError("--fp16 and --bf16 exclude each other; choose one")
    if cfg.precision is not None:
        from tft.train.precision import CHOICES

        if cfg.precision not in CHOICES:
            raise TftError(f"--precision {cfg.precision}: choose one of {', '.join(CHOICES)}")
        if cfg.fp16 or cfg.bf16:
            raise TftError("--precision and --fp16/--bf16 say the same thing twice; keep --precision")
    if cfg.max_steps == 0:
        raise TftError("--max-steps 0: must be at least 1 (or -1 to train for --epochs)")
    parse_filter_sizes(cfg.cnn_filter_sizes)
    if cfg.resume is not None and cfg.overwrite:
        raise TftError("--resume and --overwrite exclude each other: continue the run, or start it over")


TRAIN = Options(TrainConfig, RULES, check)
parse = TRAIN.parse
click_options = TRAIN.click_options


def load_yaml(path: str | Path) -> dict:
    """Read a `tft train` config file; keys mirror the flags (dashes or underscores); every value is checked."""
    return TRAIN.load_yaml(path)


def merge(file_values: dict, cli_values: dict) -> TrainConfig:
    """Defaults < config file (already parsed) < flags given on the command line (parsed here)."""
    return TRAIN.build(cli_values, file_values)
