"""`tft serve build`: an export folder -> a Triton model repository of four models (tft/serve/layout.py).

A build is a transaction. Everything is validated first (the export manifest, the sha256 of each file
it uses, the label count against the model's output, names and options); then each step gets a new
version folder N+1, staged under a hidden name and renamed in while the step's `version_policy` still
lists only the versions the ensemble uses; then the step configs list both; then the ensemble's
config.pbtxt, which pins each step's version, is replaced in one rename: the commit. Whatever the
moment a build stops, Triton loads either the old repository or the complete new one. Settings
that differ between versions (labels, lengths, pad id) live in each version's step.json, so versions
never share them through config.pbtxt. Each version's files are recorded with their sha256 in
`<name>/<version>/tft-serve.json`, which `tft serve start` checks before serving (tft/serve/records.py).

The rest of the stage, each in a module of its own: the backends (backends.py), the options
(options.py), each step's config (layout.py), the artifact choice (artifacts.py), the deploy targets
(targets.py), the committed records (records.py).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

from tft.fsutil import atomic_write_json, atomic_write_text, file_sha256, hold, make_temp_dir, pid_alive
from tft.manifest import SERVE_MANIFEST, check_file, now, read_export_manifest
from tft.manifest import versions as versions_info
from tft.serve.artifacts import pick_artifact, speed_of
from tft.serve.backends import BACKENDS, NAME_RE, RepositoryError
from tft.serve.layout import Layout, parse_pbtxt, read_config, structure, to_pbtxt, with_versions
from tft.serve.options import BuildOptions
from tft.serve.options import check as check_options
from tft.serve.records import owned_models, read_serve_manifests
from tft.serve.targets import DEFAULT_TARGET, target_of, tensorrt_of_image
from tft.tasks import kind_of

log = logging.getLogger("tft")
MODELS_DIR = Path(__file__).parent / "models"
SAVED_CONFIG = "tft-config.pbtxt"  # each version's own config.pbtxt, kept in its folder for `tft serve rollback`
PREDICTIONS_PY = Path(__file__).resolve().parents[1] / "predictions.py"
__all__ = ["BuildOptions", "RepositoryError", "build_repository", "parse_pbtxt", "read_serve_manifests"]


def next_version(model_dir: Path) -> int:
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(numbers, default=0) + 1


def history_after(previous: dict | None, served: int, rolled_back_from: int | None = None) -> dict:
    """The serving history a new committed record carries: the versions served before it (the previous record's
    own, then itself), and the versions rolled back from (never offered as a rollback target again)."""
    if previous is None:
        return {"served_before": [], "rolled_back": []}
    before = [v for v in previous.get("served_before", []) if v != served]
    if rolled_back_from is None:
        before.append(previous["version"])
    # a build chosen again (`rollback --to V`) is no longer one the user left
    rolled = sorted({*previous.get("rolled_back", []), *([rolled_back_from] if rolled_back_from else [])} - {served})
    return {"served_before": [v for v in before if v not in rolled and v != served], "rolled_back": rolled}


def clean_stale(repository: Path) -> None:
    """Remove what a killed build left: hidden staging folders (never visible to Triton as models)."""
    if not repository.is_dir():
        return
    for path in list(repository.glob(".*.tmp-*")) + list(repository.glob("*/.*.tmp-*")):
        pid = path.name.split(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and pid != str(os.getpid()) and pid_alive(int(pid)):
            continue  # another build is writing right now
        shutil.rmtree(path, ignore_errors=True)


def _place_file(src: Path | str, dest: Path) -> None:
    if isinstance(src, Path):
        try:
            os.link(src, dest)  # same filesystem: no copy of a large model
        except OSError:
            shutil.copy2(src, dest)
    else:
        dest.write_text(src, encoding="utf-8")


def checkpoint(step: str) -> None:
    """A point between two phases of a build; tests make it fail to prove each phase leaves a servable state."""


def onnx_output_width(path: Path) -> int | None:
    """The last dimension of an ONNX model's first output (its label count), if fixed."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        return dims[-1].dim_value or None if dims else None
    except Exception:  # noqa: BLE001 - not a readable ONNX graph: the check below names it
        raise RepositoryError(f"{path}: not a readable ONNX model") from None


def validate(export_dir: Path, repository: Path, opts: BuildOptions) -> tuple[dict, dict, Path, Path, BuildOptions]:
    """Everything a build needs, checked before anything is written: (manifest, artifact, model file, tokenizer,
    the options completed from the export)."""
    manifest = read_export_manifest(export_dir)
    check_options(opts)
    # no --triton-image: the image deploy/Dockerfile, the chart and KServe use (DEFAULT_TARGET), not this machine
    target = target_of(opts.triton_image or DEFAULT_TARGET)
    if opts.backend not in target.backends:
        raise RepositoryError(f"--backend {opts.backend}: {target.tag} has no {opts.backend} backend")
    if BACKENDS[opts.backend].engine and not opts.tensorrt_version:
        opts = dataclasses.replace(opts, tensorrt_version=tensorrt_of_image(opts.triton_image or DEFAULT_TARGET))
    opts = opts.for_export(manifest)
    if not NAME_RE.match(opts.name):
        raise RepositoryError(f"--name {opts.name!r}: use letters, digits, '_', '-' and '.'")
    if not 1 <= opts.max_batch <= manifest["max_batch"]:
        raise RepositoryError(f"--max-batch {opts.max_batch}: must be 1..{manifest['max_batch']} "
                              f"(the export's parity was checked up to batch {manifest['max_batch']})")
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"--repository {repository}: is a file, expected a folder")
    if repository.resolve() == export_dir.resolve() or export_dir.resolve() in repository.resolve().parents:
        raise RepositoryError(f"--repository {repository}: is inside the export {export_dir}; choose another folder")
    files = manifest.get("files", {})
    tokenizer_json = check_file(export_dir, manifest.get("tokenizer", "tokenizer.json"), files.get("tokenizer.json"))
    artifact = pick_artifact(manifest, opts, target)
    model_file = check_file(export_dir, artifact["file"], artifact.get("sha256"))
    if artifact.get("weights_file"):  # an OpenVINO IR's weights, checked like its graph
        check_file(export_dir, artifact["weights_file"], artifact.get("weights_sha256"))
    if model_file.suffix == ".onnx" and kind_of(manifest["kind"]).has_labels:
        width = onnx_output_width(model_file)
        if width is not None and width != len(manifest["labels"]):
            raise RepositoryError(f"{model_file}: the model has {width} outputs but {export_dir / 'manifest.json'} "
                                  f"lists {len(manifest['labels'])} labels")
    return manifest, artifact, model_file, tokenizer_json, opts


def target_record(opts: BuildOptions) -> dict:
    """The image the repository is built for: --triton-image, or the default deploy/Dockerfile and the chart use."""
    target = target_of(opts.triton_image or DEFAULT_TARGET)
    return {"tag": target.tag, "triton": target.triton, "python": target.python, "onnxruntime": target.onnxruntime,
            "cuda": target.cuda, "tensorrt": opts.tensorrt_version or target.tensorrt}


def intent_path(repository: Path, ensemble: str) -> Path:
    """What a build of `ensemble` is placing, written before it places anything and removed once it is done:
    a build that was killed leaves it, and the next build (holding the repository's lock) clears exactly that."""
    return repository / f".tft-build-{ensemble}.json"


def recover(repository: Path, ensemble: str) -> None:
    """Clear what an interrupted build of `ensemble` left: version folders it placed but never committed,
    step configs listing them, its temporary config files; the committed build stays as it was."""
    path = intent_path(repository, ensemble)
    if not path.exists():
        return
    try:
        intent = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        intent = {}
    committed = read_serve_manifests(repository).get(ensemble)
    in_use = (committed or {}).get("model_versions", {})
    removed = []
    for model, version in intent.get("versions", {}).items():
        model_dir = repository / model
        if in_use.get(model) == version or not model_dir.is_dir():
            continue  # committed: the build stopped while tidying
        shutil.rmtree(model_dir / str(version), ignore_errors=True)
        removed.append(f"{model} v{version}")
        if model not in in_use:  # a model this build created and never committed
            shutil.rmtree(model_dir, ignore_errors=True)
    for model, version in in_use.items():
        config = repository / model / "config.pbtxt"
        if model != ensemble and config.exists():
            atomic_write_text(config, to_pbtxt(with_versions(read_config(config), [version])))
    for model in intent.get("versions", {}):
        for leftover in (repository / model).glob(".config.pbtxt.tmp-*"):
            leftover.unlink(missing_ok=True)
    if committed is not None:
        atomic_write_json(repository / ensemble / SERVE_MANIFEST, committed)
    path.unlink(missing_ok=True)
    log.warning("%s: cleared what an interrupted build of %s left%s", repository, ensemble,
                f" ({', '.join(removed)})" if removed else "")


def recover_interrupted(repository: Path) -> list[str]:
    """Clear every interrupted build in a repository (`tft serve start` does, before checking it); a build that is
    running holds the lock, and its work is left alone. Returns the ensembles cleared."""
    from tft.fsutil import OutputError

    intents = sorted(repository.glob(".tft-build-*.json")) if repository.is_dir() else []
    if not intents:
        return []
    names = [p.name[len(".tft-build-"):-len(".json")] for p in intents]
    try:
        with hold(repository, option="--repository"):
            for name in names:
                recover(repository, name)
    except (OutputError, PermissionError):
        return []  # being built right now, or read-only: the integrity check says what is wrong, if anything
    return names


def build_repository(export_dir: str | Path, repository: str | Path, opts: BuildOptions) -> dict:
    """Validate, then (holding the repository's lock: one writer at a time) add a version of each model."""
    export_dir, repository = Path(export_dir), Path(repository)
    validate(export_dir, repository, opts)  # before the lock: a build never to happen leaves no lock file
    with hold(repository, wait=opts.wait, option="--repository"):
        return _build(export_dir, repository, opts)


def _build(export_dir: Path, repository: Path, opts: BuildOptions) -> dict:
    manifest, artifact, model_file, tokenizer_json, opts = validate(export_dir, repository, opts)
    if "pad_token_id" not in manifest:  # exports written before the manifest recorded it
        manifest = {**manifest, "pad_token_id": _pad_id(tokenizer_json)}
    layout = Layout(manifest, opts, precision=artifact["precision"], artifact=artifact)
    names = [*layout.steps, layout.ensemble]
    if repository.is_dir():
        recover(repository, layout.ensemble)
    owned = owned_models(repository) if repository.is_dir() else set()
    for name in names:
        if (repository / name).exists() and name not in owned:
            raise RepositoryError(f"{repository / name}: a model that `tft serve build` did not write; tft never "
                                  "replaces what it did not write: use another --name or --repository")

    contents = _contents(layout, artifact, model_file, tokenizer_json, export_dir, opts)
    old_configs = {name: read_config(repository / name / "config.pbtxt") for name in layout.steps
                   if (repository / name / "config.pbtxt").exists()}
    old_record = read_serve_manifests(repository).get(layout.ensemble) if repository.is_dir() else None
    old_versions = old_record.get("model_versions", {}) if old_record else {}
    for name, old in old_configs.items():
        if structure(old) != structure(contents[name][0]):
            raise RepositoryError(f"{repository / name}: this export changes the model's backend or tensors "
                                  f"({opts.backend}, {layout.num_labels} labels); versions of one model must share "
                                  "them: serve it under another --name or in another --repository")

    repository.mkdir(parents=True, exist_ok=True)
    clean_stale(repository)
    versions = {name: next_version(repository / name) for name in names}
    record = _record(layout, manifest, artifact, export_dir, opts, versions, old_record)
    _place_build(repository, layout, contents, versions, old_configs, old_versions, record, names)
    return record


def _contents(layout: Layout, artifact: dict, model_file: Path, tokenizer_json: Path, export_dir: Path,
              opts: BuildOptions) -> dict:
    """Each step's config and the files of its new version folder (a Path is copied, a str written)."""
    helper = PREDICTIONS_PY.read_text(encoding="utf-8")
    backend = BACKENDS[opts.backend]
    served_file, python_model = backend.files_for(layout.runtime)
    model_files: dict[str, Path | str] = {served_file: model_file}
    if artifact.get("weights_file"):  # model.xml's weights: model.bin beside it (what OpenVINO and Triton look for)
        model_files[str(Path(served_file).with_suffix(".bin"))] = export_dir / artifact["weights_file"]
    if python_model:
        model_files["model.py"] = (MODELS_DIR / python_model).read_text(encoding="utf-8")
        model_files["step.json"] = json.dumps(layout.model_settings(), indent=2) + "\n"
    return {
        layout.tokenizer: (layout.tokenizer_config(), {
            "model.py": (MODELS_DIR / "tokenizer.py").read_text(encoding="utf-8"), "tft_predictions.py": helper,
            "tokenizer.json": tokenizer_json,
            "step.json": json.dumps(layout.tokenizer_settings(), ensure_ascii=False, indent=2) + "\n"}),
        layout.model: (layout.model_config(), model_files),
        layout.postprocess: (layout.postprocess_config(), {
            "model.py": (MODELS_DIR / "postprocess.py").read_text(encoding="utf-8"), "tft_predictions.py": helper,
            "step.json": json.dumps(layout.postprocess_settings(), ensure_ascii=False, indent=2) + "\n"}),
    }


def _record(layout: Layout, manifest: dict, artifact: dict, export_dir: Path, opts: BuildOptions, versions: dict,
            old_record: dict | None) -> dict:
    """The build record (tft-serve.json): what was built from what, for whom, and the serving history."""
    return {
        "format": "tft.serve/2", "name": opts.name, "ensemble": layout.ensemble, "version": versions[layout.ensemble],
        "steps": layout.steps, "backend": opts.backend, "threads": opts.threads,
        "artifact": artifact["name"], "artifact_sha256": artifact.get("sha256"), "export": str(export_dir.resolve()),
        # the chosen artifact's speed as export measured it, and (--artifact auto) what else was considered
        "artifact_rows_per_s": speed_of(artifact)[0],
        "artifact_latency_ms_p50": artifact.get("parity", {}).get("latency_ms_p50"),
        "artifact_choice": artifact.get("choice"),
        "kind": manifest["kind"], "kind_params": layout.kind.params(), "windows": layout.windows,
        "task": manifest["task"], "pair": layout.pair_task,
        "labels": layout.labels,
        "outputs": [n for n, _, _ in layout.outputs], "max_batch": opts.max_batch, "instances": opts.instances,
        "device": "gpu" if opts.gpu else "cpu", "ort_tensorrt": opts.ort_tensorrt,
        "ort_tensorrt_precision": layout.ort_tensorrt_parameters()["precision_mode"] if opts.ort_tensorrt else None,
        # what the server's container needs in its environment (every launcher sets it): TF32 off for fp32 where
        # no model setting can turn it off
        "container_env": layout.tf32()[1],
        "dynamic_batching": opts.dynamic_batching, "queue_delay_us": opts.queue_delay_us, "model_versions": versions,
        "canary": canary_item(export_dir, manifest, layout.pair_task),
        # what the Python-backend steps import, as installed here: a container needs these (numpy < 2 for
        # Triton's string tensors); deploy/Dockerfile and `tft serve deploy` read them from here
        "python_packages": python_packages(opts.backend, target_record(opts), runtime=layout.runtime),
        "target": target_record(opts),
        "version_compatible": bool(artifact.get("version_compatible")),  # launchers pass Triton the backend flag
        # what was served before this build, oldest first, and the builds the user rolled back from: a rollback
        # goes to the build served before, never back to one it left
        **history_after(old_record, served=versions[layout.ensemble]),
        "files": {}, "created": now(), "versions": versions_info(),
    }


def _place_build(repository: Path, layout: Layout, contents: dict, versions: dict, old_configs: dict,
                 old_versions: dict, record: dict, names: list[str]) -> None:
    """Stage every new version under a hidden name, place them invisibly, then commit by pinning the ensemble in
    one rename; the committed version stays whole and servable whatever stops this half way."""
    staged: dict[str, Path] = {}
    committed = False
    try:
        # 1. stage every new version folder under a hidden name
        for name, (config, files) in contents.items():
            tmp = staged[name] = make_temp_dir(repository, f".{name}.tmp-{os.getpid()}-")
            vdir = tmp / str(versions[name])
            vdir.mkdir()
            # this version's own config beside it: `tft serve rollback` puts it back
            for dest, src in {**files, SAVED_CONFIG: to_pbtxt(config)}.items():
                _place_file(src, vdir / dest)
                record["files"][f"{name}/{versions[name]}/{dest}"] = file_sha256(vdir / dest)
        tmp = staged[layout.ensemble] = make_temp_dir(repository, f".{layout.ensemble}.tmp-{os.getpid()}-")
        edir = tmp / str(versions[layout.ensemble])
        edir.mkdir()
        ensemble = to_pbtxt(layout.ensemble_config(versions, versions[layout.ensemble]))
        _place_file(ensemble, edir / SAVED_CONFIG)
        record["files"][f"{layout.ensemble}/{versions[layout.ensemble]}/{SAVED_CONFIG}"] = file_sha256(edir / SAVED_CONFIG)
        atomic_write_json(edir / SERVE_MANIFEST, record)
        checkpoint("staged")
        atomic_write_json(intent_path(repository, layout.ensemble),
                          {"versions": versions, "pid": os.getpid()})
        # 2. new versions into place, invisible: each step's policy still lists only the versions in use
        for name in layout.steps:
            vdir = staged[name] / str(versions[name])
            if name in old_configs:
                in_use = [old_versions.get(name, versions[name] - 1)]
                atomic_write_text(repository / name / "config.pbtxt", to_pbtxt(with_versions(old_configs[name], in_use)))
                os.replace(vdir, repository / name / str(versions[name]))
            else:
                (staged[name] / "config.pbtxt").write_text(
                    to_pbtxt(with_versions(contents[name][0], [versions[name]])), encoding="utf-8")
                os.replace(staged[name], repository / name)
            checkpoint(f"placed {name}")
        ensemble_dir = repository / layout.ensemble
        if ensemble_dir.exists():
            os.replace(staged[layout.ensemble] / str(versions[layout.ensemble]),
                       ensemble_dir / str(versions[layout.ensemble]))
        # 3. steps list old and new versions: whichever the ensemble pins is loadable
        for name in layout.steps:
            if name in old_configs:
                in_use = [old_versions.get(name, versions[name] - 1), versions[name]]
                atomic_write_text(repository / name / "config.pbtxt", to_pbtxt(with_versions(old_configs[name], in_use)))
                checkpoint(f"both versions of {name}")
        # 4. the commit: the ensemble pinned to the new versions, in one rename
        if ensemble_dir.exists():
            atomic_write_text(ensemble_dir / "config.pbtxt", ensemble)
        else:
            (staged[layout.ensemble] / "config.pbtxt").write_text(ensemble, encoding="utf-8")
            os.replace(staged[layout.ensemble], ensemble_dir)
        committed = True
        checkpoint("committed")
        # 5. tidy: steps keep only the new version loaded; the record covers every config as it now stands
        # (`tft serve start` refuses a repository whose configs were changed by hand or by another tool)
        for name in layout.steps:
            atomic_write_text(repository / name / "config.pbtxt",
                              to_pbtxt(with_versions(contents[name][0], [versions[name]])))
        for name in names:
            record["files"][f"{name}/config.pbtxt"] = file_sha256(repository / name / "config.pbtxt")
        atomic_write_json(ensemble_dir / str(versions[layout.ensemble]) / SERVE_MANIFEST, record)
        atomic_write_json(ensemble_dir / SERVE_MANIFEST, record)  # the committed record's copy, for people
        write_requirements(repository, record)
        intent_path(repository, layout.ensemble).unlink(missing_ok=True)
    except OSError as e:
        if committed:
            raise
        # a full or read-only disk is the destination's, whichever file the error names (a copy names its source)
        blame_source = e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) and e.filename and \
            not Path(e.filename).resolve().is_relative_to(repository.resolve())
        where = e.filename if blame_source else repository.resolve()
        raise RepositoryError(f"{where}: cannot write the new version ({e.strerror}); the served version is "
                              "unchanged") from None
    finally:
        for tmp in staged.values():
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


REQUIREMENTS = "tft-requirements.txt"


def write_requirements(repository: Path, current: dict) -> None:
    """<repository>/tft-requirements.txt: what every tft model in it imports (deploy/Dockerfile installs it)."""
    pins: dict[str, str] = {}
    for record in [current, *read_serve_manifests(repository).values()]:
        for requirement in record.get("python_packages", []):
            pins.setdefault(re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0], requirement)
    pinned = any("==" in r for r in pins.values())  # pins are this machine's (python_packages): for its Python only
    import platform

    header = (f"# for Python {'.'.join(platform.python_version().split('.')[:2])} (pinned as installed where "
              "`tft serve build` ran; deploy/Dockerfile refuses another image's Python)\n" if pinned else "")
    atomic_write_text(repository / REQUIREMENTS, header + "".join(f"{r}\n" for r in sorted(pins.values())))


# openvino: the release of tft-toolchain[openvino] or later (an older OpenVINO may not read the IR it writes)
PACKAGE_RANGES = {"numpy": "numpy>=1.21,<2", "tokenizers": "tokenizers>=0.20,<1", "onnxruntime": "onnxruntime>=1.18",
                  "openvino": "openvino>=2026.3,<2027"}


def python_packages(backend: str, target: dict | None = None, runtime: str | None = None) -> list[str]:
    """numpy and tokenizers (the tokenizer and postprocess steps) and the model step's own: pinned as installed here
    when the target runs this Python, else ranges its pip resolves to wheels for its own Python (numpy < 2 kept, for
    Triton's string tensors); tests resolve them for every target's Python (tests/test_targets.py)."""
    import platform

    spec = BACKENDS[backend]
    own = spec.packages if runtime in (None, spec.runtime) or not spec.python_model else (runtime,)
    names = ("numpy", "tokenizers", *own)
    here = ".".join(platform.python_version().split(".")[:2])
    if target is not None and not target["python"].startswith(here + "."):
        return [PACKAGE_RANGES[name] for name in names]
    return [f"{name}=={installed_version(name)}" for name in names]


# a package the served steps import, and the distributions that install it: a GPU host's `tft-toolchain[gpu]` has
# onnxruntime-gpu, whose releases carry the same version numbers; the Python-backend step runs on the CPU, so the
# requirement recorded for the container names plain onnxruntime either way
DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")}


def installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in DISTRIBUTIONS.get(package, (package,)):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    raise RepositoryError(f"the Python package {package!r} is not installed here (none of "
                          f"{', '.join(DISTRIBUTIONS.get(package, (package,)))}); the served steps need it")


def canary_item(export_dir: Path, manifest: dict, pair: bool) -> dict:
    """A real example for health checks: the one the export recorded (its first parity text)."""
    canary = manifest.get("canary") if isinstance(manifest.get("canary"), dict) else {}
    item = {"text": str(canary.get("text") or "canary")[:1000]}
    if pair:
        item["text_pair"] = str(canary.get("text_pair") or item["text"])[:1000]
    return item


def _pad_id(tokenizer_json: Path) -> int:
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        for token in ("[PAD]", "<pad>"):
            if tok.token_to_id(token) is not None:
                return int(tok.token_to_id(token))
    except Exception:  # noqa: BLE001 - a tokenizer without a pad token pads with 0, as the collator does
        pass
    return 0
