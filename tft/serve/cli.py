"""`tft serve build|start`, `tft infer`, `tft bench`."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from tft.errors import TftError
from tft.serve.backends import SERVE_DEVICES
from tft.serve.options import BUILD
from tft.serve.targets import DEFAULT_TARGET

log = logging.getLogger("tft")


@click.group("serve")
def serve_group():
    """Build a Triton model repository from an export, and run the embedded Triton.

    \b
      tft serve build --export exports/afqmc --name afqmc      # -> model_repository/
      tft serve start                                          # gRPC on 127.0.0.1:8001
      tft infer --model afqmc "花呗怎么还款" "花呗如何还款"
    """


@serve_group.command("build")
@click.option("--export", "export_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A `tft export` folder (with manifest.json).")
@click.option("--repository", default="model_repository", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Model repository to write or add a version to.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file whose keys mirror these flags; flags win.")
@BUILD.click_options
def build_command(export_dir, repository, config_file, **options):
    """Write a Triton model repository: <name>_tokenizer, <name>_model, <name>_postprocess and the
    ensemble <name> (text in, labels or entities out). An existing repository gets a new version."""
    from tft.serve.artifacts import describe_choice
    from tft.serve.repository import build_repository

    opts = BUILD.build(options, BUILD.load_yaml(config_file) if config_file else {})
    record = build_repository(export_dir, repository, opts)
    versions = ", ".join(f"{m} v{v}" for m, v in record["model_versions"].items())
    click.echo(f"wrote {repository}: {versions} (artifact {record['artifact']}, backend {record['backend']}, "
               f"{record['device']})")
    for entry in record.get("artifact_choice") or ():
        click.echo(f"  {'*' if entry['chosen'] else ' '} {describe_choice(entry)}")
    click.echo(f"a `tft serve start` serving {repository} loads it within its --health-interval; start one with: "
               f"tft serve start --repository {repository}; any other Triton must be told to load {record['name']}")


@serve_group.command("rollback")
@click.option("--repository", default="model_repository", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="A `tft serve build` repository.")
@click.option("--name", required=True, help="The served ensemble.")
@click.option("--to", "to", type=click.IntRange(1), metavar="VERSION",
              help="The build to go back to.  [default: the one before the current]")
@click.option("--wait", is_flag=True, help="If another command is writing the repository, wait for it.")
def rollback_command(repository, name, to, wait):
    """Serve an earlier build of a model again, in one atomic step (builds keep every version).

    \b
      tft serve rollback --name afqmc            # back to the build before the current one
      tft serve rollback --name afqmc --to 3     # back to v3
    A running `tft serve start` serves it within its --health-interval; any other Triton must load it again.
    """
    from tft.serve.rollback import rollback

    record = rollback(repository, name, to, wait)
    click.echo(f"{name}: rolled back from v{record['rolled_back_from']} to v{record['version']} "
               f"(artifact {record.get('artifact')}, built {record.get('created')} from {record.get('export')})")
    click.echo(f"build record: {repository / name / str(record['version']) / 'tft-serve.json'}")
    click.echo(f"a `tft serve start` serving {repository} loads it within its --health-interval; any other Triton "
               f"must be told to load {name}")


@serve_group.command("deploy")
@click.option("--repository", default="model_repository", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="A `tft serve build` repository.")
@click.option("--name", help="The served ensemble. Default: the only one in the repository.")
@click.option("--chart-values", "values_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Values file to write for deploy/helm/tft-triton.")
@click.option("--kserve", "kserve_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a KServe InferenceService (and its probe ConfigMap) instead; needs --model-url "
                   "(s3://, gs://, as:// or pvc://CLAIM/path).")
@click.option("--device", type=click.Choice(SERVE_DEVICES),
              help="Where the pods run the model.  [default: the device the build was made for]")
@click.option("--gpus", type=click.IntRange(1, 64), default=1, show_default=True, help="GPUs per pod with --device gpu.")
@click.option("--image", help="Triton image (default: NVIDIA's nvcr.io/nvidia/tritonserver).")
@click.option("--image-tag", default=DEFAULT_TARGET, show_default=True,
              help="Triton release of the image (YY.MM-py3 from tft's table; the build's own --triton-image by default).")
@click.option("--built-image", is_flag=True, help="The image was built from deploy/Dockerfile: install no packages at start.")
@click.option("--model-url", help="Object-store copy of the repository: s3://, gs:// or as://.")
@click.option("--credentials-secret", help="Secret with the object store's credentials (with --model-url).")
@click.option("--pvc", help="PersistentVolumeClaim holding the repository (instead of --model-url).")
@click.option("--overwrite", is_flag=True, help="Replace an existing values file.")
def deploy_command(repository, name, values_file, kserve_file, device, gpus, image, image_tag, built_image,
                   model_url, credentials_secret, pvc, overwrite):
    """Write Helm values for deploy/helm/tft-triton from a built repository: the model and step names,
    the canary request of the liveness probe, the device, image and where the repository lives.

    \b
      tft serve deploy --name afqmc --chart-values values-afqmc.yaml --pvc models
      helm install afqmc deploy/helm/tft-triton -f values-afqmc.yaml
    """
    import yaml

    from tft.fsutil import atomic_write_text, check_output_file, hold
    from tft.serve.deploy import chart_values
    from tft.serve.records import read_serve_manifests

    if (values_file is None) == (kserve_file is None):
        raise click.UsageError("give --chart-values FILE (Helm) or --kserve FILE (KServe)")
    if kserve_file is not None and not model_url:
        raise click.UsageError("--kserve needs --model-url: where KServe's storage initializer copies the repository from")
    if kserve_file is not None and built_image and not image:
        raise click.UsageError("--kserve --built-image needs --image: the image built from deploy/Dockerfile")
    out_file, option = (values_file, "--chart-values") if values_file is not None else (kserve_file, "--kserve")
    check_output_file(out_file, option=option, overwrite=overwrite)
    with hold(repository, shared=True, wait=True, option="--repository"):  # never a half-written build's record
        records = read_serve_manifests(repository)
    if not records:
        raise TftError(f"{repository}: no model built by `tft serve build` in it")
    if name is None:
        if len(records) > 1:
            raise click.UsageError(f"{repository} serves {', '.join(sorted(records))}: pick one with --name")
        name = next(iter(records))
    if name not in records:
        raise TftError(f"{repository}: no model {name!r} (it has {', '.join(sorted(records))})")
    built_device = records[name].get("device", "cpu")
    if device is None:  # a GPU build deployed with no GPU restart-loops: the build says where it runs
        device = built_device
    elif device == "cpu" and built_device == "gpu":
        raise TftError(f"--device cpu: {name} was built for GPUs (backend {records[name].get('backend')}); deploy it "
                       "with --device gpu, or build it again for the CPU")
    if image is None:  # NVIDIA's image: a release tft's table knows, the one the repository was built for
        from tft.serve.targets import target_of

        built_for = (records[name].get("target") or {}).get("tag")
        if built_for and image_tag == DEFAULT_TARGET:
            image_tag = built_for
        tag = target_of(image_tag).tag  # one line for a release tft's table does not hold
        if built_for and tag != built_for:
            raise TftError(f"--image-tag {image_tag}: {name} was built for {built_for} (its packages are for that "
                           "image's Python); build it again with --triton-image, or deploy that tag")
    if kserve_file is not None:
        from tft.serve.deploy import kserve_manifest, to_yaml

        documents = kserve_manifest(records[name], storage_uri=model_url, device=device, gpus=gpus, image_tag=image_tag,
                                    built_image=image if built_image else None)
        header = (f"# Written by: tft serve deploy --repository {repository} --name {name} --kserve {kserve_file}\n"
                  f"# Apply: kubectl apply -f {kserve_file}\n")
        atomic_write_text(kserve_file, header + to_yaml(documents))
        click.echo(f"wrote {kserve_file}: {name} on {device} (KServe); apply it with\n  kubectl apply -f {kserve_file}")
        return
    values = chart_values(records[name], device=device, gpus=gpus, image=image, image_tag=image_tag,
                          model_url=model_url, credentials_secret=credentials_secret, pvc=pvc,
                          stock_image=not built_image)
    header = (f"# Written by: tft serve deploy --repository {repository} --name {name} --chart-values {values_file}\n"
              f"# Install: helm install {name} deploy/helm/tft-triton -f {values_file}\n")
    atomic_write_text(values_file, header + yaml.safe_dump(values, allow_unicode=True, sort_keys=False))
    click.echo(f"wrote {values_file}: {name} on {device}; install it with\n"
               f"  helm install {name} deploy/helm/tft-triton -f {values_file}")


@serve_group.command("start")
@click.option("--repository", default="model_repository", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. 127.0.0.1 keeps the server local; see docs/serving.md before exposing it.")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model", "models", multiple=True, help="Load only these models (repeatable). Default: all.")
@click.option("--health-interval", default=5.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds between canary inferences; a failing model is reloaded. 0 turns the loop off.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Triton's log (default: ~/.cache/tft/logs/tritonserver-<time>-<pid>.log; its tail is printed on failure).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the endpoints here as JSON once every model is ready (for scripts).")
@click.option("--triton-arg", "extra", multiple=True,
              help="Extra tritonserver flag, e.g. --triton-arg=--grpc-restricted-protocol=admin:key=secret.")
@click.option("--python-env", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A virtual environment whose packages the Python-backend models use instead of tft's (say, one "
              "holding only model_repository/tft-requirements.txt, as a container would).")
@click.option("--ready-timeout", type=click.FloatRange(1, 86400), metavar="SECONDS",
              help="How long to wait for every model to load.  [default: 120 s; 900 s where a build warms TensorRT "
                   "engines (--ort-tensorrt)]")
def start_command(repository, host, grpc_port, http_port, metrics_port, models, health_interval, log_file,
                  ready_file, extra, python_env, ready_timeout):
    """Run the embedded Triton (the `tritonserver` binary of nvidia-pytriton, CPU, Python backend) in the
    foreground until Ctrl-C. Waits for the models to be ready and prints the endpoints."""
    from tft.fsutil import atomic_write_json, check_output_file, hold
    from tft.serve.records import check_integrity, read_serve_manifests
    from tft.serve.repository import recover_interrupted
    from tft.serve.health import HealthLoop, serve_until_stopped, stop_on_signals
    from tft.serve.server import Ports, TritonServer

    ports = Ports(grpc_port, http_port, metrics_port)
    if len({ports.grpc, ports.http, ports.metrics}) < 3:
        raise click.UsageError("--grpc-port, --http-port and --metrics-port must differ")
    if ready_file:
        check_output_file(ready_file, option="--ready-file", overwrite=True)
    if python_env is not None and not (python_env / "bin" / "python3").exists():
        raise click.BadParameter(f"{python_env}: not a virtual environment (no bin/python3)", param_hint="--python-env")
    # the flags the builds need (a version-compatible engine) come from the records: TritonServer.build_flags
    server = TritonServer(repository, ports, host=host, models=list(models) or None, log_file=log_file,
                          extra_args=list(extra), python_env=python_env, ready_timeout=ready_timeout)
    server.preflight()
    recover_interrupted(repository)
    stop_on_signals()
    health = None
    try:
        # a reader's lock while the files are checked and loaded: a build waits, and never changes them meanwhile
        with hold(repository, shared=True, wait=True, option="--repository"):
            if repository.is_dir():
                checked = check_integrity(repository)
                log.info("repository %s: %d files match their build records", repository, checked)
            server.start()
            ready = server.wait_ready()
        click.echo(f"Triton is ready: gRPC {server.grpc_url}  HTTP {server.http_url}  "
                   f"metrics http://{host}:{metrics_port}/metrics")
        click.echo(f"models: {', '.join(sorted(ready))}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"warning: listening on {host}: reachable from other machines; protect it (TLS proxy, "
                       "--triton-arg=--grpc-restricted-protocol=...). See docs/serving.md.", err=True)
        else:
            click.echo("bound to 127.0.0.1 only (use --host to expose it)")
        if ready_file:
            atomic_write_json(ready_file, {"grpc": server.grpc_url, "http": server.http_url,
                                           "metrics": f"{host}:{metrics_port}", "models": sorted(ready),
                                           "pid": os.getpid(), "log": str(server.log_file)})
        canaries = {name: rec for name, rec in read_serve_manifests(repository).items() if name in ready}
        if health_interval > 0 and canaries:
            health = HealthLoop(server, canaries, interval=health_interval)
            health.start()
        serve_until_stopped(server, health)
    except KeyboardInterrupt:
        click.echo("stopping Triton", err=True)
    finally:
        if health:
            health.stop()
        server.stop()
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)


CONNECTION_KEYS = ("url", "ssl", "root_certificates", "private_key", "certificate_chain", "headers", "timeout",
                   "retries")


def _client_options(url, ssl, root_certificates, private_key, certificate_chain, headers, timeout, retries):
    from tft.serve.client import ClientOptions

    parsed = {}
    for h in headers:
        key, sep, value = h.partition(":") if ":" in h else h.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{h!r}: expected 'Name: value'", param_hint="--header")
        parsed[key.strip().lower()] = value.strip()
    return ClientOptions(url=url, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                         certificate_chain=certificate_chain, headers=parsed, timeout=timeout, retries=retries)


def connection_options(url_default: str | None = "localhost:8001",
                       url_help: str = "Triton gRPC endpoint (host:port)."):
    """The gRPC connection flags of `tft infer`, `tft bench` and `tft verify`, handed to the command as one
    `connection` (a ClientOptions) beside `model`: the commands never pass the eight values around."""

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            values = {key: kwargs.pop(key) for key in CONNECTION_KEYS}
            return f(*args, connection=_client_options(**values), **kwargs)

        for option in reversed([
            click.option("--url", default=url_default, show_default=url_default is not None, help=url_help),
            click.option("--model", required=True, help="Served (ensemble) model name."),
            click.option("--ssl", is_flag=True, help="Use TLS."),
            click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False),
                         help="CA bundle for TLS (implies --ssl)."),
            click.option("--private-key", type=click.Path(exists=True, dir_okay=False),
                         help="Client key for mutual TLS."),
            click.option("--certificate-chain", type=click.Path(exists=True, dir_okay=False),
                         help="Client certificate for mutual TLS."),
            click.option("-H", "--header", "headers", multiple=True,
                         help="Extra gRPC metadata, e.g. -H 'authorization: Bearer T' (repeatable)."),
            click.option("--timeout", default=30.0, show_default=True,
                         type=click.FloatRange(0, 86400, min_open=True), help="Seconds per request."),
            click.option("--retries", default=8, show_default=True, type=click.IntRange(0, 100),
                         help="Retries of an unavailable server or crashed model, with exponential backoff."),
        ]):
            command = option(command)
        return command

    return decorate


client_options = connection_options()


def _items(info, texts, input_path) -> list[dict]:
    return list(_item_source(info, texts, input_path)())


def _item_source(info, texts, input_path):
    """A callable giving the inputs anew each time it is called: a file is read as it is iterated."""
    from tft.inference import iter_inputs, task_of

    if texts and input_path:
        raise click.UsageError("give TEXT arguments or --input, not both")
    if input_path:
        if info.tft:
            task = task_of(info.tft)
        elif not input_path.endswith(".txt") and input_path != "-":
            raise click.UsageError(f"{info.name} was not built by `tft serve build`, so its task's file format is "
                                   "unknown: give plain .txt lines (pairs tab-separated)")
        else:
            from tft.tasks import get_task

            task = get_task("afqmc" if info.pair else "sst2")  # only pair-ness matters for .txt
        return lambda: iter_inputs(input_path, task)
    items = _text_items(info, texts)
    return lambda: iter(items)


def _text_items(info, texts) -> list[dict]:
    if not texts:
        raise click.UsageError("give TEXT arguments or --input FILE")
    if info.pair:
        if len(texts) % 2:
            raise click.UsageError(f"{info.name} is a sentence-pair model: give TEXT TEXT_PAIR pairs "
                                   f"({len(texts)} texts given)")
        return [{"id": f"arg-{i // 2}", "text": texts[i], "text_pair": texts[i + 1]} for i in range(0, len(texts), 2)]
    return [{"id": f"arg-{i}", "text": t} for i, t in enumerate(texts)]


@click.command("infer")
@click.argument("texts", nargs=-1)
@client_options
@click.option("-i", "--input", "input_path", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="The task's own file format, or .txt lines (pairs tab-separated); `-`: text lines from stdin, "
                   "answered as they arrive.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines, in input order (default: stdout).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096), help="Texts per request.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1024), help="Requests in flight.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUTPUT.partial (inputs whose text "
              "changed are asked again).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@click.pass_context
def infer_command(ctx, texts, connection, model, input_path, output, batch_size, concurrency, resume, overwrite):
    """Send texts to a served model over gRPC; print or write labels/scores or entities.

    \b
      tft infer --model afqmc "花呗怎么还款" "花呗如何还款"          # a pair model takes TEXT TEXT_PAIR
      tft infer --model cluener -i data/cluener/test.json -o answers.jsonl
    Answers are written to OUTPUT.partial as they arrive (complete lines, input order) and renamed to
    OUTPUT when every input is answered; after a failure, --resume sends only what is missing.
    """
    if resume and output is None:
        raise click.UsageError("--resume needs -o OUTPUT")
    from tft.fsutil import check_output_file, hold, written_in_place

    if resume and input_path == "-":
        raise click.UsageError("--resume reads the input again to find what is missing, and stdin (-i -) cannot be "
                               "read twice: save the input to a file and resume from that")
    if resume and written_in_place(output):
        raise click.UsageError(f"--resume: -o {output} is a device or a pipe, which keeps no answers to resume from")
    if output is not None and not resume:
        check_output_file(output, overwrite=overwrite, inputs=[input_path])
    with contextlib.ExitStack() as held:
        if output is not None:  # one writer per output file
            held.enter_context(hold(output, option="-o", wait_option=None))
        stats, sent = _infer(ctx, texts, connection, model, input_path, output, batch_size, concurrency, resume)
    rate = f"{stats.throughput:.1f} texts/s" if stats.seconds else ""
    cut = f", {stats.truncated} texts longer than the model reads (answers marked truncated)" if stats.truncated else ""
    click.echo(f"answered {stats.answered} of {sent} inputs in {stats.seconds:.2f}s ({rate}), "
               f"{stats.retries} retries{cut}", err=True)
    if stats.unanswered:
        where = f"; answers so far are in {output}.partial, run again with --resume" if output else ""
        raise TftError(f"{stats.unanswered} inputs unanswered: {stats.first_error}{where}")
    if stats.failed:
        raise TftError(f"{stats.failed} inputs refused by the server (see their \"error\" field); "
                       f"first: {stats.first_error}")


def _infer(ctx, texts, opts, model, input_path, output, batch_size, concurrency, resume):
    """Stream the inputs to the server and the answers to stdout or OUTPUT.partial, in input order."""
    from tft.fsutil import real_output, written_in_place
    from tft.serve.client import Client, OrderedWriter, PartialOutput

    client = Client(options=opts)
    info = client.info(model)
    source = _item_source(info, texts, input_path)
    quiet = ctx.find_root().obj.get("quiet", False) if ctx.find_root().obj else False
    if output is None:
        def echo(index, item, answer):
            click.echo(json.dumps({**item, **answer}, ensure_ascii=False))

        _, stats = client.infer(model, source(), batch_size, concurrency, progress=not quiet, stream=echo)
        return stats, stats.answered + stats.failed + stats.unanswered
    if written_in_place(output):  # -o /dev/stdout, a named pipe: answers go straight there, nothing is renamed
        with open(output, "w", encoding="utf-8") as handle:
            _, stats = client.infer(model, source(), batch_size, concurrency, stream=OrderedWriter(handle),
                                    progress=not quiet)
        return stats, stats.answered + stats.failed + stats.unanswered
    answered_by = {"url": opts.url, "model": model, "weights_sha256": (info.tft or {}).get("weights_sha256")}
    partial = PartialOutput(real_output(output), source, resume, answered_by)
    with partial.open() as handle:
        _, stats = client.infer(model, partial.todo(), batch_size, concurrency, stream=OrderedWriter(handle),
                                progress=not quiet)
        handle.flush()
        os.fsync(handle.fileno())
    sent = stats.answered + stats.failed + stats.unanswered
    if stats.unanswered == 0:
        partial.finish()
    if resume:
        click.echo(f"resumed: {partial.kept} answers kept, {sent} inputs sent"
                   + (f", {partial.stale} answers for texts no longer in the input dropped" if partial.stale
                      else ""), err=True)
    return stats, sent


@click.command("bench")
@client_options
@click.option("-i", "--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Real texts to send (the task's file format or .txt lines), cycled.")
@click.option("--concurrency", default="1,4,16", show_default=True, help="Comma-separated levels.")
@click.option("--requests", default=500, show_default=True, type=click.IntRange(1), help="Timed requests per level.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 4096), help="Texts per request.")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(0), help="Untimed requests first.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as JSON.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG chart.")
@click.option("--perf-analyzer-data", "pa_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the texts as perf_analyzer --input-data JSON, to measure with Triton's own tool.")
@click.option("--overwrite", is_flag=True, help="Replace existing --json / --plot / --perf-analyzer-data files.")
def bench_command(connection, model, input_path, concurrency, requests, batch_size, warmup, json_out, plot_out, pa_out,
                  overwrite):
    """Throughput and p50/p95/p99 latency of a served model at each concurrency level.

    \b
    The same texts for Triton's perf_analyzer:
      tft bench --model afqmc -i dev.json --perf-analyzer-data pa.json
      perf_analyzer -m afqmc -i grpc --input-data pa.json --concurrency-range 1:16
    """
    from tft.fsutil import atomic_write_json, check_output_file

    for option, path in (("--json", json_out), ("--plot", plot_out), ("--perf-analyzer-data", pa_out)):
        if path:
            check_output_file(path, option=option, overwrite=overwrite, inputs=[input_path])
    from tft.serve import bench as bench_mod
    from tft.serve.client import Client

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter(f"{concurrency!r}: expected numbers like 1,4,16", param_hint="--concurrency") from None
    if not levels or min(levels) < 1 or max(levels) > 1024:
        raise click.BadParameter(f"{concurrency!r}: levels from 1 to 1024", param_hint="--concurrency")
    opts, url = connection, connection.url
    info = Client(options=opts).info(model)
    items = _items(info, (), input_path)
    if pa_out:
        atomic_write_json(pa_out, bench_mod.perf_analyzer_data(items, info.pair))
        click.echo(f"wrote {len(items)} requests for perf_analyzer --input-data to {pa_out}", err=True)
    rows = bench_mod.bench(opts, info, items, levels, requests, batch_size, warmup)
    click.echo(bench_mod.table(rows))
    if json_out:
        atomic_write_json(json_out, {"model": model, "url": url, "input": str(input_path), "rows": rows})
    if plot_out:
        bench_mod.plot(rows, plot_out, f"{model} @ {url}, batch {batch_size}")
    errors = sum(r["errors"] for r in rows)
    if errors:
        first = next(r["first_error"] for r in rows if r.get("first_error"))
        raise TftError(f"{errors} requests failed; first: {first}")
    sys.stdout.flush()
