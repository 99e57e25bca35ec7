"""`tft train`, `tft eval`, `tft predict`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from tft.errors import TftError
from tft.train.config import TrainConfig, click_options, load_yaml, merge

LAUNCH_KEYS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "rdzv_backend", "rdzv_endpoint",
               "rdzv_id", "rdzv_timeout", "max_restarts")


def launch_options(f):
    """The torchrun launch options of `tft train` (and `tft pipeline`)."""
    for option in reversed([
        click.option("--nproc-per-node", type=click.IntRange(1, 1024), default=1, show_default=True,
                     help="Processes (GPUs) per node; >1 starts torchrun."),
        click.option("--nnodes", type=click.IntRange(1, 4096), default=1, show_default=True,
                     help="Nodes in a multi-node run."),
        click.option("--node-rank", type=click.IntRange(0), default=0, show_default=True, help="This node's rank."),
        click.option("--master-addr", help="Rank-0 node address; required with --nnodes > 1 (static rendezvous).  "
                     "[default: 127.0.0.1 on one node]"),
        click.option("--master-port", type=click.IntRange(1, 65535), default=29500, show_default=True,
                     help="Rank-0 node port."),
        click.option("--rdzv-backend", type=click.Choice(["static", "c10d"]), default="static", show_default=True,
                     help="torchrun rendezvous: c10d lets nodes join in any order and restart (elastic)."),
        click.option("--rdzv-endpoint", metavar="HOST:PORT",
                     help="With --rdzv-backend c10d: the rendezvous host and port."),
        click.option("--rdzv-id", default="tft", show_default=True, help="With --rdzv-backend c10d: the job's id."),
        click.option("--rdzv-timeout", type=click.IntRange(1, 86400), default=300, show_default=True,
                     help="Seconds the nodes wait for each other (torchrun's own default is 600-900); a node that "
                          "cannot reach the rank-0 node in this time stops with one line."),
        click.option("--max-restarts", type=click.IntRange(0, 100), default=0, show_default=True,
                     help="torchrun restarts of the worker group after a failure (resumes from the newest "
                          "checkpoint)."),
    ]):
        f = option(f)
    return f


LAUNCH_DEFAULTS = {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0, "master_addr": None, "master_port": 29500,
                   "rdzv_backend": "static", "rdzv_endpoint": None, "rdzv_id": "tft", "rdzv_timeout": 300,
                   "max_restarts": 0}


@click.command("train", context_settings={"max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file whose keys mirror these flags; flags win.")
@click_options
@launch_options
def train_command(config_file, **options):
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
    cfg = merge(file_values, options)
    world = launch["nproc_per_node"] * launch["nnodes"]
    if launch["node_rank"] >= launch["nnodes"]:
        raise TftError(f"--node-rank {launch['node_rank']}: must be below --nnodes {launch['nnodes']}")
    if world > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        sys.exit(launch_distributed(cfg, launch))

    from tft.train.recipe import run

    best = run(cfg)
    if best is not None:
        click.echo(f"best checkpoint: {best}")


@click.command("check-model", context_settings={"max_content_width": 100})
@click.argument("model")
@click.option("--task", required=True, help="Task name (see `tft tasks`): its kind and labels shape the head checked.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="The task's data: a few training examples are "
              "the inputs checked (default: the task's public download).")
@click.option("--max-seq-length", type=click.IntRange(8, 8192), default=128, show_default=True)
@click.option("--head", type=click.Choice(["linear", "cnn", "lstm", "gru"]), default="linear", show_default=True)
@click.option("--text-field", help="Generic csv/jsonl tasks: text column.")
@click.option("--text-pair-field", help="Generic csv/jsonl tasks: second text column.")
@click.option("--label-field", help="Generic csv/jsonl tasks: label column.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_model_command(model, as_json, **options):
    """Check that MODEL can be trained, batched, exported and served by tft, in seconds, writing nothing.

    \b
    The checks `tft train` and `tft pipeline` run before their first step (--skip-preflight skips them there):
      inputs      the tokenizer's outputs against the model's forward() (what the served tokenizer sends)
      train step  forward and backward on padded batches at two lengths and two batch sizes
      padding     a row answers alike alone and in a padded batch (the server batches rows of any length)
      onnx        a trial ONNX export, run in ONNX Runtime at two other shapes against PyTorch
    Exits 1 with one line naming the check that failed and what to do.
    """
    from tft.train.recipe import TrainRecipe

    cfg = merge({}, {**{k: v for k, v in options.items() if v is not None}, "model": model})
    result = TrainRecipe(cfg).check_only()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for check, found in result["checks"].items():
        click.echo(f"{check:<11} ok  {found}")
    click.echo(f"preflight passed in {result['seconds']:.1f} s: {model} ({result['model_type']}) can be trained, "
               "exported and served by tft")


def torchrun_command(launch: dict, config_path: Path) -> list[str]:
    """The torch.distributed.run command line for a launch (static rendezvous at rank 0, or elastic c10d)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch['nproc_per_node']}",
           f"--nnodes={launch['nnodes']}"]
    if launch.get("rdzv_backend", "static") == "c10d":
        if not launch.get("rdzv_endpoint"):
            raise TftError("--rdzv-backend c10d needs --rdzv-endpoint HOST:PORT (the same on every node)")
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={launch['rdzv_endpoint']}", f"--rdzv-id={launch['rdzv_id']}"]
    else:
        cmd += [f"--node-rank={launch['node_rank']}", f"--master-addr={launch.get('master_addr') or '127.0.0.1'}",
                f"--master-port={launch['master_port']}"]
    if launch.get("rdzv_timeout"):
        cmd.append(f"--rdzv-conf=timeout={launch['rdzv_timeout']}")
    if launch.get("max_restarts"):
        cmd.append(f"--max-restarts={launch['max_restarts']}")
    return cmd + ["-m", "tft", "train", "--config", str(config_path)]


def launch_distributed(cfg: TrainConfig, launch: dict) -> int:
    """Start this same training under torch.distributed.run with the resolved config."""
    if not cfg.task:
        raise TftError("--task is required (see `tft tasks`)")
    if cfg.output_dir is None:
        if launch["nnodes"] > 1:
            raise TftError("--output-dir is required with --nnodes > 1: every node must write the same run folder")
        cfg.output_dir = f"runs/{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if launch["nnodes"] > 1 and launch["rdzv_backend"] == "static" and not launch["master_addr"]:
        # 127.0.0.1 on every node: each would wait for a rank 0 on its own loopback, for ever
        raise TftError("--nnodes > 1 needs --master-addr: the address of the rank-0 node, the same on every node "
                       "(or --rdzv-backend c10d with --rdzv-endpoint)")
    out = Path(cfg.output_dir)
    if launch["node_rank"] > 0 and launch["rdzv_backend"] == "static":
        # torchrun would wait its full timeout, then print pages of C++ frames: say it in one line instead
        wait_for_rank0(launch["master_addr"], launch["master_port"], launch["rdzv_timeout"])
    from tft.fsutil import hold
    from tft.tasks import get_task
    from tft.train.rundir import claim

    settings = {**{k: v for k, v in vars(cfg).items() if k != "wait"},
                "model": cfg.model or get_task(cfg.task).default_model}
    with contextlib.ExitStack() as held:
        if launch["node_rank"] == 0:
            held.enter_context(hold(out, wait=cfg.wait))  # held by the launcher for all its ranks
            claimed = claim(out, cfg.resume, cfg.overwrite, settings)  # refuse here, once, before any rank starts
            if claimed.finished:
                click.echo(f"{out} already finished training; nothing to do (--overwrite starts it over)", err=True)
                return 0
        return _launch(cfg, launch, out)


def wait_for_rank0(host: str, port: int, timeout: float) -> None:
    """Until `timeout`, try to reach the rank-0 node's rendezvous port (it may start after this node)."""
    import socket

    deadline, last = time.monotonic() + timeout, "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(0.1, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise TftError(f"cannot reach the rank-0 node at {host}:{port} within {timeout:g} s (--rdzv-timeout): "
                           f"{last}; start rank 0 first, and check --master-addr and that the port is open between "
                           "the nodes")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _launch(cfg: TrainConfig, launch: dict, out: Path) -> int:
    from tft.train.rundir import CLAIMED_ENV

    if launch.get("max_restarts") and cfg.resume is None:
        cfg.resume = "auto"  # a restarted worker group continues from the newest complete checkpoint
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / f"launch_config.node{launch['node_rank']}.yaml"
    cfg.to_yaml(config_path)
    os.environ[CLAIMED_ENV] = str(out.resolve())
    cmd = torchrun_command(launch, config_path)
    click.echo("launching: " + " ".join(cmd[2:]), err=True)
    return subprocess.call(cmd)


@click.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--split", type=click.Choice(["dev", "test", "train"]), default="dev", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Default: the folder the checkpoint was trained on.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the metrics as JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
def eval_command(checkpoint, split, data_dir, batch_size, output, overwrite):
    """Evaluate a checkpoint on a labelled split with the task's metrics (JSON on stdout)."""
    from tft.fsutil import atomic_write_json, check_output_file
    from tft.train.predict import evaluate

    if output:
        check_output_file(output, overwrite=overwrite)

    result = evaluate(checkpoint, split, data_dir, batch_size)
    if output:
        atomic_write_json(output, result)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))
