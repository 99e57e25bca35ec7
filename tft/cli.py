"""`tft` command line. Each stage adds its commands from its own package (tft/train, tft/export, tft/serve)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from tft import __version__

log = logging.getLogger("tft")


def library_log_path() -> Path:
    from tft.fsutil import cache_root

    return cache_root() / "logs" / "libraries.log"


def setup_logging(verbose: int, quiet: bool) -> None:
    """tft's own messages go to stderr; other libraries' warnings (Python warnings included) go to a
    log file, or to stderr with -v, so piped output stays readable."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    if verbose:
        lib = logging.StreamHandler(sys.stderr)
    else:
        path = library_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lib = logging.FileHandler(path, delay=True, encoding="utf-8")
        except OSError:
            lib = logging.NullHandler()
        # read when transformers is imported (if ever: the client commands never do)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # gRPC's C core logs handshake failures on stderr in its own format (read when grpc is imported): tft says
        # what they mean in its one line instead
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        _quiet_imported_libraries()
    lib.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.handlers[:] = [lib]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)


def _quiet_imported_libraries() -> None:
    """A library imported before the CLI set its variables (tft's main called from Python, a notebook, a process
    forked after the imports) read them already: tell it through its own switches instead."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            transformers_logging.disable_progress_bar()  # huggingface_hub's bars too
        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            transformers_logging.set_verbosity_error()
    elif "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


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


def _register_stages() -> None:
    from tft.data.cli import data_group, tasks_command
    from tft.export.cli import export_command
    from tft.pipeline import pipeline_command, predict_command, verify_command
    from tft.serve.cli import bench_command, infer_command, serve_group
    from tft.train.cli import check_model_command, eval_command, train_command

    for command in (tasks_command, data_group, train_command, check_model_command, eval_command, predict_command, export_command,
                    serve_group, infer_command, bench_command, pipeline_command, verify_command):
        cli.add_command(command)


_register_stages()

# a module that is missing -> the extra that installs it
EXTRAS = {"tritonclient": "serve", "pytriton": "serve", "grpc": "serve", "onnxruntime": "cpu",
          "tensorrt": "trt", "polygraphy": "trt", "torch": "train", "transformers": "train",
          "accelerate": "train", "onnx": "train", "seqeval": "train", "sklearn": "train"}


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Every failure a user can cause ends in one line and a non-zero exit; -v adds the traceback."""
    args = sys.argv[1:]
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        cli.main(args=args, prog_name="tft", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else "tft"
        _fail(f"{e.format_message()} (see '{command} --help')", e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except ModuleNotFoundError as e:
        if verbose:
            raise
        root = (e.name or "").split(".")[0]
        extra = EXTRAS.get(root)
        hint = f": pip install 'tft-toolchain[{extra}]'" if extra else ""
        _fail(f"this command needs the Python package '{root}', which is not installed{hint}", 1)
    except OSError as e:
        if verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except Exception as e:  # noqa: BLE001 - a bug of ours: still one line, the traceback with -v
        if verbose:
            raise
        _fail(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(run again with -v for the traceback, and please report it)", 1)
