"""`tft pipeline` (train -> export -> serve build -> embedded Triton -> verify) and `tft verify`.

    tft pipeline --task afqmc --data-dir data/afqmc --model scratch:tiny --epochs 8 --output-dir runs/demo
    tft pipeline --task sst2 --data-dir ../shared/datasets/sst2 --model <MiniLM dir> --serve   # leave it running
    tft verify --repository model_repository --model afqmc --checkpoint runs/afqmc/best     # embedded Triton
    tft verify --url triton-host:8001 --model afqmc --checkpoint runs/afqmc/best            # a server elsewhere

Output folder: run/ (training), export/, model_repository/, report.json, report.md.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from tft.errors import TftError
from tft.export.options import ExportConfig
from tft.inference import ORT_DEVICES
from tft.options import Options, Rule
from tft.serve.backends import BACKENDS, backend_names
from tft.serve.cli import connection_options
from tft.serve.options import BuildOptions
from tft.train.cli import LAUNCH_DEFAULTS, LAUNCH_KEYS, launch_options
from tft.train.config import TRAIN, TrainConfig

log = logging.getLogger("tft")


PIPELINE_MARKER = "tft-pipeline.json"
PIPELINE_FILES = {"run", "export", "model_repository", "report.json", "report.md", "train_config.yaml",
                  "triton.log", PIPELINE_MARKER}


AFTER_TRAINING = ("int8", "openvino", "max_batch", "name", "artifact", "backend")  # options of the stages a resumed pipeline runs again


def claim_pipeline_dir(out: Path, settings: dict, resume: bool, overwrite: bool) -> None:
    """A pipeline folder is new, or an earlier pipeline's continued with the same settings (--resume),
    or started over (--overwrite); never an old run reported under new settings."""
    from tft.fsutil import OutputError, atomic_write_json, check_output_dir, clear_own_dir

    if resume and overwrite:
        raise TftError("--resume and --overwrite exclude each other: continue the pipeline, or start it over")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        check_output_dir(out, what="pipeline folder", marker=PIPELINE_MARKER, overwrite=True)
    else:
        _check_own_pipeline(out, entries, overwrite)
        if overwrite:
            clear_own_dir(out, lambda name: name in PIPELINE_FILES or name.startswith("."))
        elif not resume:
            raise OutputError(f"--output-dir {out}: holds an earlier pipeline; add --resume auto to continue it with "
                              "the same settings, --overwrite to start it over, or choose another folder")
        else:
            recorded = json.loads((out / PIPELINE_MARKER).read_text(encoding="utf-8")).get("settings", {})
            for key, value in settings.items():
                # a resumed pipeline exports, builds and verifies again under the options given now
                if key in recorded and recorded[key] != value and key not in AFTER_TRAINING:
                    raise TftError(f"--resume: {out} ran with --{key.replace('_', '-')} {recorded[key]!r}, this run "
                                   f"asks for {value!r}; use the same settings, or --overwrite to start over")
    atomic_write_json(out / PIPELINE_MARKER, {"format": "tft.pipeline/1", "settings": settings})


def _check_own_pipeline(out: Path, entries: list[str], overwrite: bool) -> None:
    """An earlier pipeline's folder: tft's marker, nothing but its outputs, and (for --overwrite) nothing of
    anyone else's inside them: the export's own ownership record, the run's files, the repository's models."""
    from tft.fsutil import OutputError, check_output_dir, inside_repository
    from tft.export.pipeline import earlier_export
    from tft.manifest import EXPORT_MANIFEST
    from tft.serve.records import owned_models
    from tft.train.rundir import tool_entry

    if inside_repository(out / "x") is not None:  # out itself, or a folder above it, is a repository
        raise OutputError(f"--output-dir {out}: is inside a model repository; choose a folder outside it")
    try:
        marker = json.loads((out / PIPELINE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    foreign = [e for e in entries if e not in PIPELINE_FILES and not e.startswith(".")]
    if not isinstance(marker, dict) or marker.get("format") != "tft.pipeline/1" or foreign:
        shown = ", ".join((foreign or entries)[:3])
        raise OutputError(f"--output-dir {out}: exists and is not a pipeline folder written by tft (it holds {shown}); "
                          "tft never replaces what it did not write: choose another folder")
    if not overwrite:
        return
    if (out / "export").is_dir():
        check_output_dir(out / "export", what="export", marker=EXPORT_MANIFEST, overwrite=True, legacy=earlier_export)
    run = out / "run"
    others = [p.name for p in run.iterdir() if not tool_entry(p.name)] if run.is_dir() else []
    repo = out / "model_repository"
    if repo.is_dir():
        ours = owned_models(repo) | {"tft-requirements.txt"}
        others += [f"model_repository/{p.name}" for p in repo.iterdir() if p.name not in ours and not p.name.startswith(".")]
    if others:
        raise OutputError(f"--output-dir {out}: --overwrite would delete {', '.join(others[:3])}, which tft did not "
                          "write; move it away or choose another folder")


def _train(cfg, out: Path, launch: dict, resume: bool) -> Path:
    """Train in a child `tft train` (so that torchrun/DDP launches work the same); a resumed pipeline
    continues its run (a finished one is not trained again)."""
    from tft.train.rundir import is_finished

    run_dir = out / "run"
    if resume and is_finished(run_dir):
        log.info("pipeline: %s already finished training with these settings; not trained again", run_dir)
        return run_dir / "best"
    cfg = cfg.replace(output_dir=str(run_dir), resume="auto" if resume else None, overwrite=False)
    config_path = out / "train_config.yaml"
    cfg.to_yaml(config_path)
    cmd = [sys.executable, "-m", "tft", "--quiet", "train", "--config", str(config_path),
           *[f"--{k.replace('_', '-')}={v}" for k, v in launch.items()]]
    log.info("pipeline: training (%s)", " ".join(cmd[2:]))
    if subprocess.call(cmd) != 0:
        raise TftError(f"training failed; its outputs are in {run_dir}")
    return run_dir / "best"


def _tensorrt_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def engine_choice(asked: bool | None, cuda: bool, tensorrt: bool) -> tuple[bool, str | None]:
    """Whether the pipeline builds a TensorRT engine, and the line it says about it. By default an engine
    where a GPU and TensorRT are both here; `--trt` asked on a host without them fails later, in export, in
    one line naming what is missing."""
    if asked is not None:
        return asked, None
    if cuda and not tensorrt:
        return False, ("pipeline: CUDA is here but the tensorrt package is not (pip install 'tft-toolchain[trt]'): "
                       "no TensorRT engine, serving ONNX")
    return cuda and tensorrt, None


@dataclass(frozen=True)
class PipelineOptions:
    """What `tft pipeline` adds to the training options; `compose` turns them into the export and build options."""

    int8: bool = True
    openvino: bool | None = None  # None: OpenVINO candidates where the openvino package is installed
    trt: bool | None = None  # None: an engine where CUDA and TensorRT are both here
    name: str | None = None
    artifact: str = "auto"
    max_batch: int = 32
    backend: str = "python"
    device: str = "auto"
    serve: bool = False
    grpc_port: int | None = None
    triton_image: str | None = None
    tensorrt_version: str | None = None


PIPELINE = Options(PipelineOptions, {
    "int8": Rule(bool, "Also export int8 as a candidate to serve (one failing its gate is set aside, not fatal)."),
    "openvino": Rule(bool, "Also export OpenVINO IR as candidates to serve on the CPU: fp32, bf16 where the CPU has it "
                           "natively, and (with --int8) NNCF int8.  [default: when OpenVINO is installed]"),
    "trt": Rule(bool, "Build a TensorRT engine.  [default: when CUDA and TensorRT are here]"),
    "name": Rule(str, "Served model name. Default: the task."),
    "artifact": Rule(str, "Export artifact to serve; auto: the fastest whose parity gate passed and whose answers do "
                          "not depend on their batch (see `tft serve build --artifact`)."),
    "max_batch": Rule(int, "Export and serving batch limit.", low=1, high=4096),
    "backend": Rule(str, "Triton backend of the model step; onnxruntime and tensorrt need a full Triton (NVIDIA's "
                         "container, TFT_TRITON_ROOT=/opt/tritonserver), tensorrt an engine (--trt).",
                    choices=backend_names),
    "device": Rule(str, "ONNX Runtime device for the parity gate and the offline side of verify.", choices=ORT_DEVICES),
    "serve": Rule(bool, "Leave Triton running after verification (Ctrl-C stops it).", flag=True),
    "grpc_port": Rule(int, "With --serve: gRPC port (default 8001; else a free one).", low=1, high=65535),
    "triton_image": Rule(str, "The Triton image the repository is for (YY.MM-py3): packages for its Python, no graph "
                              "fused by another ONNX Runtime (see `tft serve build --triton-image`).", metavar="TAG"),
    "tensorrt_version": Rule(str, "With --backend tensorrt: the serving image's TensorRT (X.Y.Z.B), where tft's table "
                                  "of images does not list it; checked before training.", metavar="VERSION"),
}, click_types=True)


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def check_engine_target(build: BuildOptions) -> None:
    """A TensorRT engine for an image: its TensorRT must be known (tft's table, or --tensorrt-version)."""
    from tft.serve.backends import BACKENDS
    from tft.serve.targets import tensorrt_of_image

    if BACKENDS[build.backend].engine and build.triton_image and not build.tensorrt_version:
        tensorrt_of_image(build.triton_image)


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline: each stage's own typed options, composed (never copied) from the pipeline's."""

    train: TrainConfig
    export: ExportConfig
    build: BuildOptions
    out: Path
    own: PipelineOptions

    @classmethod
    def compose(cls, train: TrainConfig, own: PipelineOptions, out: Path, trt: bool) -> "PipelineConfig":
        openvino = openvino_installed() if own.openvino is None else own.openvino
        export = ExportConfig(output_dir=str(out / "export"), int8=own.int8, trt=trt, max_batch=own.max_batch,
                              openvino=openvino, openvino_int8=openvino and own.int8,
                              device=own.device, overwrite=True, optional_candidates=True)
        build = BuildOptions(name=own.name or train.task, max_batch=own.max_batch, artifact=own.artifact,
                             backend=own.backend, triton_image=own.triton_image, tensorrt_version=own.tensorrt_version)
        check_engine_target(build)  # before hours of training, not after
        return cls(train, export, build, out, own)

    def settings(self) -> dict:
        """What a resumed pipeline must share with the first run (tft-pipeline.json)."""
        own = self.own
        return {**{k: v for k, v in vars(self.train).items() if k not in ("resume", "overwrite", "output_dir", "wait")},
                "int8": own.int8, "openvino": own.openvino, "max_batch": own.max_batch, "name": own.name,
                "artifact": own.artifact, "backend": own.backend}


def run_pipeline(cfg: PipelineConfig, launch: dict, *, ports=None, host="127.0.0.1",
                 health_interval: float = 5.0) -> dict:
    from tft.fsutil import hold

    with hold(cfg.out, wait=cfg.train.wait):  # one pipeline per folder
        return _run_pipeline(cfg, launch, ports, host, health_interval)


def _run_pipeline(cfg: PipelineConfig, launch: dict, ports, host: str, health_interval: float) -> dict:
    from tft.export.pipeline import run_export
    from tft.serve.artifacts import describe_choice
    from tft.serve.health import HealthLoop, serve_until_stopped, stop_on_signals
    from tft.serve.repository import build_repository
    from tft.serve.server import Ports, TritonServer
    from tft.serve.client import ClientOptions
    from tft.verify import VerifyOptions, verify, write_report

    out, name = cfg.out, cfg.build.name
    resume = cfg.train.resume is not None
    claim_pipeline_dir(out, cfg.settings(), resume, cfg.train.overwrite)
    best = _train(cfg.train, out, launch, resume)
    log.info("pipeline: exporting %s", best)
    # int8 variants are candidates here: one that fails its gate is recorded and not served
    export_dir = run_export(best, cfg.export)
    repo = out / "model_repository"
    record = build_repository(export_dir, repo, cfg.build)
    log.info("pipeline: model repository %s (%s v%s)", repo, name, record["version"])
    for entry in record.get("artifact_choice") or ():
        log.info("pipeline: %s %s", "serving" if entry["chosen"] else "not serving", describe_choice(entry))
    server = TritonServer(repo, ports or Ports.free(host), host=host, log_file=out / "triton.log")
    with server:
        log.info("pipeline: Triton ready at %s; verifying the dev split over gRPC", server.grpc_url)
        report = verify(VerifyOptions(best, name, ClientOptions(url=server.grpc_url), export_dir=export_dir,
                                      artifact=record["artifact"], also=_offline_also(export_dir, cfg.export.int8),
                                      device=cfg.export.device))
        report["pipeline"] = {"output_dir": str(out.resolve()), "repository": str(repo.resolve()),
                              "triton_log": str(server.log_file)}
        json_path, md_path = write_report(report, out)
        _summary(report, md_path)
        if not report["passed"]:
            raise TftError(f"verification FAILED: served answers differ from the trained model beyond the "
                           f"thresholds; see {md_path}")
        if cfg.own.serve:
            click.echo(f"\nserving {name} at {server.grpc_url} (Ctrl-C stops it). Query it with:\n"
                       f"  tft infer --url {server.grpc_url} --model {name} \"your text\"")
            stop_on_signals()
            health = HealthLoop(server, {name: record}, interval=health_interval)
            health.start()
            try:
                serve_until_stopped(server, health)
            except KeyboardInterrupt:
                click.echo("stopping Triton", err=True)
            finally:
                health.stop()
    return report


def _offline_also(export_dir: Path, int8: bool) -> tuple[str, ...]:
    """The int8 artifact, where it passed its gate, evaluated offline beside the served one."""
    if not int8:
        return ()
    from tft.manifest import read_export_manifest

    names = {a["name"] for a in read_export_manifest(export_dir)["artifacts"]}
    return ("int8",) if "int8" in names else ()


def _summary(report: dict, md_path: Path) -> None:
    main = report["main_metric"]
    parts = [f"{name} {run['metrics'].get(main, float('nan')):.4f}" for name, run in report["runs"].items()]
    click.echo(f"dev {main} ({report['examples']} examples): " + ", ".join(parts))
    click.echo("agreement: " + ", ".join(f"{k.replace('~', ' vs ')} {v:.4f}" for k, v in report["agreement"].items()))
    click.echo(f"verification {'passed' if report['passed'] else 'FAILED'}; report: {md_path}")


@click.command("pipeline", context_settings={"max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Training YAML (as tft train).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Pipeline folder. Default: runs/<task>-pipeline.")
@PIPELINE.click_options
@TRAIN.click_options(skip=("output_dir",))
@launch_options
def pipeline_command(config_file, output_dir, **options):
    """Train -> export (fp32 + int8; TensorRT with a GPU) -> Triton repository -> embedded Triton ->
    verify the whole dev split over gRPC against the PyTorch checkpoint. Writes report.json and
    report.md; exits 1 if served answers differ beyond the export thresholds. Takes every
    `tft train` flag.

    \b
      tft pipeline --task afqmc --data-dir data/afqmc --model scratch:tiny --epochs 8
      tft pipeline --task cluener --data-dir ../shared/datasets/cluener --model scratch:tiny --serve
    """
    from tft.serve.server import Ports, free_port

    launch = {k: options.pop(k) for k in LAUNCH_KEYS}
    # only the launch options given (click >= 8.3 reports an option without a default as a sentinel, not None)
    launch = {k: v for k, v in launch.items() if v is not None and v != LAUNCH_DEFAULTS[k]}
    own = PIPELINE.build({k: options.pop(k) for k in PIPELINE.keys()})
    train = TRAIN.build(options, TRAIN.load_yaml(config_file) if config_file else {})
    if train.resume not in (None, "auto"):
        raise TftError("--resume: a pipeline continues its own run: use --resume auto")
    if not train.task:
        raise TftError("--task is required (see `tft tasks`)")
    serves_engine = BACKENDS[own.backend].engine  # the backend serves TensorRT engines only
    if serves_engine and own.trt is False:
        raise click.UsageError(f"--backend {own.backend} serves a TensorRT engine: drop --no-trt")
    trt, note = engine_choice(True if serves_engine else own.trt, _cuda(), _tensorrt_installed())
    if note:
        log.info(note)
    out = output_dir or Path("runs") / f"{train.task}-pipeline"
    ports = Ports(own.grpc_port or 8001, free_port(), free_port()) if own.serve else None
    return run_pipeline(PipelineConfig.compose(train, own, out, trt), launch, ports=ports)


@click.command("verify")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="The `tft train` best/ folder the served model came from.")
@connection_options(url_default=None, url_help="A Triton that already serves the model (gRPC host:port).")
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A `tft serve build` repository: started on the embedded Triton unless --url is given.")
@click.option("--export", "export_dir", type=click.Path(exists=True, file_okay=False),
              help="The export served (default: the one recorded in the repository).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), help="Labelled file (default: the dev split).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the dev split (default: training's).")
@click.option("--also", multiple=True, help="Also evaluate this export artifact offline (e.g. --also int8).")
@click.option("-o", "--output-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where report.json and report.md go.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report.json / report.md there.")
@click.option("--device", type=click.Choice(ORT_DEVICES), default="auto", show_default=True,
              help="ONNX Runtime device of the offline export path (auto: CUDA when onnxruntime-gpu offers it).")
def verify_command(checkpoint, connection, model, repository, export_dir, data, data_dir, also, output_dir, overwrite,
                   device):
    """Send a labelled split through the served model over gRPC and compare with the PyTorch checkpoint
    (and the exported ONNX artifact): metrics, agreement, throughput, latency, disagreeing examples.
    Exits 1 if served answers differ beyond the export thresholds."""
    import dataclasses

    from tft.serve.records import read_serve_manifests
    from tft.serve.server import Ports, TritonServer
    from tft.verify import VerifyOptions, verify, write_report

    if not repository and not connection.url:
        raise click.UsageError("give --repository (started here) or --url (already served)")
    from tft.fsutil import check_output_file

    for name in ("report.json", "report.md"):
        check_output_file(Path(output_dir) / name, option="-o", overwrite=overwrite)
    artifact = None
    if repository:
        record = read_serve_manifests(repository).get(model)
        if record is None:
            raise TftError(f"{repository / model}: no build record; was {model!r} built into {repository} by "
                           "`tft serve build`?")
        artifact = record.get("artifact")
        if export_dir is None and Path(record.get("export", "")).is_dir():
            export_dir = record["export"]
    if also and not export_dir:
        raise click.UsageError("--also needs the export folder (--export, or a repository that records it)")
    opts = VerifyOptions(checkpoint, model, connection, export_dir=export_dir, artifact=artifact, data=data,
                         data_dir=data_dir, also=tuple(also), device=device)
    if connection.url:
        report = verify(opts)
    else:
        with TritonServer(repository, Ports.free()) as server:
            report = verify(dataclasses.replace(opts, connection=dataclasses.replace(connection,
                                                                                     url=server.grpc_url)))
    _, md_path = write_report(report, output_dir)
    _summary(report, md_path)
    if not report["passed"]:
        raise TftError(f"verification FAILED; see {md_path}")


@click.command("predict")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--export", "--onnx", "export_dir", type=click.Path(exists=True, file_okay=False),
              help="A `tft export` folder: its artifact runs on its own runtime (ONNX Runtime or OpenVINO).")
@click.option("--artifact", help="With --export: the artifact to run (fp32, openvino-bf16, ...).  [default: fp32]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output JSON lines.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--device", type=click.Choice(ORT_DEVICES), default="auto", show_default=True,
              help="With --export: ONNX Runtime's device (auto: CUDA when onnxruntime-gpu offers it).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@click.option("--windows/--no-windows", default=True, show_default=True,
              help="NER: read a text longer than the model reads in overlapping windows and merge them (as `tft serve "
                   "build` does on the python backend); --no-windows cuts it (answers marked truncated).")
def predict_command(input_path, checkpoint, export_dir, artifact, output, batch_size, device, overwrite, windows):
    """Predict labels and scores (classification) or entities with character offsets (NER).

    INPUT is a file in the task's format or plain text lines (`.txt`; pairs as `text<TAB>pair`).
    Entity offsets are character positions in the input text, end exclusive.
    """
    # here, not in tft/train or tft/export: it runs either stage's model, and stages never import each other
    if bool(checkpoint) == bool(export_dir):
        raise TftError("pass exactly one of --checkpoint and --export")
    if artifact and not export_dir:
        raise TftError("--artifact chooses among an export's artifacts: give --export")
    from tft.fsutil import check_output_file

    check_output_file(output, overwrite=overwrite, inputs=[input_path])
    if export_dir:
        from tft.export.runtime import predict_file

        n = predict_file(export_dir, input_path, output, batch_size, device=device, artifact=artifact,
                         windows=windows)
    else:
        from tft.train.predict import predict_file

        n = predict_file(checkpoint, input_path, output, batch_size, windows=windows)
    click.echo(f"wrote {n} predictions to {output}")
