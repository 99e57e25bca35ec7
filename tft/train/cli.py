"""`tft train`, `tft eval`, `tft predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from tft.errors import TftError
from tft.train.config import TrainConfig, load_yaml, merge

LAUNCH_KEYS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")


@click.command("train", context_settings={"max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file whose keys mirror these flags; flags win.")
@click.option("--task", help="Task name (see `tft tasks`).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the split files (default: the task's public download).")
@click.option("--model", help="Hugging Face model name or local path; `scratch:tiny` for an offline smoke model. Default: the task's.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Run folder. Default: runs/<task>-<timestamp>.")
@click.option("--epochs", type=float, help="Training epochs.  [default: 3]")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--batch-size", type=int, help="Per-device batch size.  [default: 32]")
@click.option("--eval-batch-size", type=int, help="Per-device eval batch size.  [default: 2x batch size]")
@click.option("--grad-accum", type=int, help="Gradient accumulation steps.  [default: 1]")
@click.option("--lr", type=float, help="Peak learning rate.  [default: 5e-5]")
@click.option("--weight-decay", type=float, help="AdamW weight decay.  [default: 0.01]")
@click.option("--warmup", type=float, help="Warm-up: a fraction of steps (<1) or a step count.  [default: 0.1]")
@click.option("--max-seq-length", type=int, help="Truncate inputs to this many tokens.  [default: 128]")
@click.option("--seed", type=int, help="Random seed.  [default: 42]")
@click.option("--fp16/--no-fp16", default=None, help="CUDA mixed precision with loss scaling.")
@click.option("--bf16/--no-bf16", default=None, help="bfloat16 mixed precision (Ampere+ GPUs, or CPU autocast).")
@click.option("--allow-fp32-fallback", is_flag=True, default=None, help="Train in fp32 when --fp16/--bf16 is unsupported here.")
@click.option("--eval-every", type=int, help="Evaluate and checkpoint every N steps.  [default: each epoch]")
@click.option("--save-total-limit", type=int, help="Checkpoints to keep (the best is always kept).  [default: 2]")
@click.option("--early-stopping", type=int, metavar="PATIENCE", help="Stop after PATIENCE evaluations without improvement.")
@click.option("--resume", metavar="PATH|auto", help="Continue from a checkpoint, or the newest complete one (`auto`).")
@click.option("--limit-train", type=int, metavar="N", help="Use the first N training examples (quick runs).")
@click.option("--limit-eval", type=int, metavar="N", help="Use the first N dev examples.")
@click.option("--text-field", help="Generic csv/jsonl tasks: text column.")
@click.option("--text-pair-field", help="Generic csv/jsonl tasks: second text column (makes it a pair task).")
@click.option("--label-field", help="Generic csv/jsonl tasks: label column.")
@click.option("--group-by-length/--no-group-by-length", default=None, help="Batch similar lengths together.  [default: on]")
@click.option("--pad-to-max-length", is_flag=True, default=None, help="Pad every example to --max-seq-length (slow; for comparison).")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--workers", type=int, help="Data-loader worker processes.  [default: 0]")
@click.option("--trust-remote-code", is_flag=True, default=None, help="Allow model code from the hub (off by default).")
@click.option("--logging-steps", type=int, help="Log loss and learning rate every N steps.  [default: 10]")
@click.option("--no-cache", "no_cache", is_flag=True, help="Do not reuse or write cached features.")
@click.option("--nproc-per-node", type=int, default=1, show_default=True, help="Processes (GPUs) per node; >1 starts torchrun.")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Nodes in a multi-node run.")
@click.option("--node-rank", type=int, default=0, show_default=True, help="This node's rank.")
@click.option("--master-addr", default="127.0.0.1", show_default=True, help="Rank-0 node address.")
@click.option("--master-port", type=int, default=29500, show_default=True, help="Rank-0 node port.")
def train_command(config_file, no_cache, **options):
    """Fine-tune a model on a task; writes <output-dir>/best (Hugging Face format + tft.json) for `tft export`.

    \b
    Examples:
      tft train --task afqmc --data-dir ../shared/datasets/afqmc --model bert-base-chinese --fp16
      tft train --task afqmc --data-dir data/afqmc --model scratch:tiny --max-steps 200
      tft train --task cluener --nproc-per-node 4 --output-dir runs/cluener     # one node, 4 GPUs
      tft train --config configs/afqmc.yaml --resume auto
    """
    launch = {k: options.pop(k) for k in LAUNCH_KEYS}
    file_values = load_yaml(config_file) if config_file else {}
    if no_cache:
        options["cache"] = False
    cfg = merge(file_values, options)
    world = launch["nproc_per_node"] * launch["nnodes"]
    if launch["nproc_per_node"] < 1 or launch["nnodes"] < 1:
        raise TftError("--nproc-per-node and --nnodes must be at least 1")
    if world > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        sys.exit(launch_distributed(cfg, launch))

    from tft.train.recipe import run

    best = run(cfg)
    if best is not None:
        click.echo(f"best checkpoint: {best}")


def launch_distributed(cfg: TrainConfig, launch: dict) -> int:
    """Start this same training under torch.distributed.run with the resolved config."""
    if not cfg.task:
        raise TftError("--task is required (see `tft tasks`)")
    if cfg.output_dir is None:
        cfg.output_dir = f"runs/{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / f"launch_config.node{launch['node_rank']}.yaml"
    cfg.to_yaml(config_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch['nproc_per_node']}",
           f"--nnodes={launch['nnodes']}", f"--node-rank={launch['node_rank']}",
           f"--master-addr={launch['master_addr']}", f"--master-port={launch['master_port']}",
           "-m", "tft", "train", "--config", str(config_path)]
    click.echo("launching: " + " ".join(cmd[2:]), err=True)
    return subprocess.call(cmd)


@click.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--split", type=click.Choice(["dev", "test", "train"]), default="dev", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Default: the folder the checkpoint was trained on.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the metrics as JSON here.")
def eval_command(checkpoint, split, data_dir, batch_size, output):
    """Evaluate a checkpoint on a labelled split with the task's metrics (JSON on stdout)."""
    from tft.fsutil import atomic_write_json
    from tft.train.predict import evaluate

    result = evaluate(checkpoint, split, data_dir, batch_size)
    if output:
        atomic_write_json(output, result)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


@click.command("predict")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--onnx", "export_dir", type=click.Path(exists=True, file_okay=False), help="A `tft export` folder (ONNX Runtime).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output JSON lines.")
@click.option("--batch-size", default=64, show_default=True)
def predict_command(input_path, checkpoint, export_dir, output, batch_size):
    """Predict labels and scores (classification) or entities with character offsets (NER).

    INPUT is a file in the task's format or plain text lines (`.txt`; pairs as `text<TAB>pair`).
    Entity offsets are character positions in the input text, end exclusive.
    """
    if bool(checkpoint) == bool(export_dir):
        raise TftError("pass exactly one of --checkpoint and --onnx")
    if export_dir:
        from tft.export.runtime import predict_file
    else:
        from tft.train.predict import predict_file
    n = predict_file(checkpoint or export_dir, input_path, output, batch_size)
    click.echo(f"wrote {n} predictions to {output}")
