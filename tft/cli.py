"""`tft` command line. Each stage adds its commands from its own package (tft/train, tft/export, tft/serve)."""

from __future__ import annotations

import logging
import sys

import click

from tft import __version__
from tft.errors import NotBuiltError

log = logging.getLogger("tft")


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    if not verbose:
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            pass


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="tft")
@click.option("-v", "--verbose", count=True, help="More detail (debug logs, library warnings).")
@click.option("--quiet", is_flag=True, help="Errors only.")
@click.pass_context
def cli(ctx, verbose, quiet):
    """tft: train a transformer on labelled text, export it to ONNX/TensorRT with parity checks,
    and serve it on NVIDIA Triton over gRPC.

    \b
    Typical flow:
      tft train  --task afqmc --data-dir data/afqmc        # -> runs/afqmc-<time>/best
      tft export --checkpoint runs/afqmc-<time>/best       # -> exports/afqmc-<time>
      tft serve build --export exports/afqmc-<time>        # -> model_repository/
      tft serve start && tft infer --model afqmc "text" "pair"
      tft pipeline --task afqmc --data-dir data/afqmc              # all of it, verified end to end

    `tft tasks` lists the built-in tasks and their data formats.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    setup_logging(verbose, quiet)


def _not_built(name: str, summary: str, issue: str):
    @cli.command(name, help=f"{summary}\n\nNot built yet ({issue}): exits with status 2.",
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command():
        raise NotBuiltError(f"'tft {name}' is not built yet ({issue})")

    return command


def _register_stages() -> None:
    from tft.data.cli import data_group, tasks_command

    cli.add_command(tasks_command)
    cli.add_command(data_group)
    stages = {
        "train": ("Fine-tune a model on a task.", "tft.train.cli", "train_command", "issue 3"),
        "eval": ("Evaluate a trained checkpoint on a split.", "tft.train.cli", "eval_command", "issue 3"),
        "predict": ("Predict labels or entities for a file with a checkpoint or an export.", "tft.train.cli",
                    "predict_command", "issue 3"),
        "export": ("Export a checkpoint to ONNX / TensorRT with parity checks.", "tft.export.cli",
                   "export_command", "issue 4"),
        "serve": ("Build a Triton model repository and run Triton.", "tft.serve.cli", "serve_group", "issue 5"),
        "infer": ("Send texts to a served model over gRPC.", "tft.serve.cli", "infer_command", "issue 5"),
        "bench": ("Measure served throughput and latency.", "tft.serve.cli", "bench_command", "issue 5"),
        "pipeline": ("Train, export, serve and verify in one command.", "tft.pipeline", "pipeline_command", "issue 6"),
        "verify": ("Check served answers against the trained checkpoint.", "tft.pipeline", "verify_command",
                   "issue 6"),
    }
    import importlib

    for name, (summary, module, attr, issue) in stages.items():
        try:
            command = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            _not_built(name, summary, issue)
        else:
            cli.add_command(command, name)


_register_stages()


def main() -> None:
    cli(prog_name="tft")
