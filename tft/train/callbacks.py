"""Trainer callbacks: checkpoint completion markers, a JSON-lines log, a progress bar with
loss / learning rate / samples per second, and the end-of-run plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers.trainer_callback import ProgressCallback, TrainerCallback

from tft.fsutil import atomic_write_text
from tft.train.rundir import COMPLETE_MARKER


class CheckpointMarker(TrainerCallback):
    """on_save runs after the Trainer wrote every file of checkpoint-N: mark it complete.
    A kill during the save leaves an unmarked folder, which resume ignores."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                atomic_write_text(folder / COMPLETE_MARKER, json.dumps({"step": state.global_step}) + "\n")


class JsonlLogger(TrainerCallback):
    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}) + "\n")


class LineProgress(TrainerCallback):
    """Progress for logs and pipes: one line every 30 s (and at each evaluation), no carriage returns."""

    def __init__(self, args, every: float = 30.0):
        from tft.console import Ticker

        self.samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.ticker, self.start, self.start_step = Ticker(every), None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.time(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            rate = (state.global_step - self.start_step) * self.samples_per_step / max(time.time() - self.start, 1e-9)
            self.ticker.tick(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}, "
                             f"lr {logs.get('learning_rate', 0):.2e}, {rate:.1f} samples/s")
        elif any(k.startswith("eval_") for k in logs):
            shown = {k[5:]: round(v, 4) for k, v in logs.items()
                     if k.startswith("eval_") and isinstance(v, float) and "runtime" not in k and "per_second" not in k}
            self.ticker.tick(f"step {state.global_step}: dev {shown}", force=True)


class Progress(ProgressCallback):
    """The Trainer's bar, with loss, learning rate and throughput as its postfix instead of printed dicts."""

    def __init__(self, args):
        super().__init__()
        self.samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.start = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.start, self.start_step = time.time(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        bar = self.training_bar
        if "loss" in logs and bar is not None:
            elapsed = max(time.time() - self.start, 1e-9)
            rate = (state.global_step - self.start_step) * self.samples_per_step / elapsed
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}",
                            samples_s=f"{rate:.1f}", refresh=False)
        elif any(k.startswith("eval_") for k in logs):
            shown = {k[5:]: round(v, 4) for k, v in logs.items()
                     if k.startswith("eval_") and isinstance(v, float) and "runtime" not in k and "per_second" not in k}
            (bar.write if bar is not None else print)(f"step {state.global_step}: dev {shown}")


def plot_history(history: list[dict], main_metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(h["step"], h["loss"]) for h in history if "loss" in h]
    metric = [(h["step"], h[f"eval_{main_metric}"]) for h in history if f"eval_{main_metric}" in h]
    rate = [(h["step"], h["learning_rate"]) for h in history if "learning_rate" in h]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if rate:  # the schedule (--lr-scheduler, --warmup) as it ran
        ax_lr.plot(*zip(*rate), color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    if loss:
        ax.plot(*zip(*loss), label="train loss", color="tab:blue")
    ax.set_ylabel("loss")
    if metric:
        ax2 = ax.twinx()
        ax2.plot(*zip(*metric), "o-", label=f"dev {main_metric}", color="tab:orange")
        ax2.set_ylabel(f"dev {main_metric}")
    fig.legend(loc="upper right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
