"""`tft serve build`: an export folder -> a Triton model repository of four models.

    <name>_tokenizer   Python backend: TEXT (+ TEXT_PAIR) -> token ids (+ OFFSETS for NER)
    <name>_model       onnxruntime_onnx | tensorrt_plan | Python backend running ONNX Runtime
    <name>_postprocess Python backend: logits -> LABEL, SCORE | ENTITIES
    <name>             the ensemble wiring the three: text in, answers out

Every config.pbtxt is a `ModelConfig` protobuf printed with `text_format`, so its syntax is right by
construction (and tests parse each back).

A build is a transaction. Everything is validated first (the export manifest, the sha256 of each file
it uses, the label count against the model's output, names and options); then each step gets a new
version folder N+1, staged under a hidden name and renamed in while the step's `version_policy` still
lists only the versions the ensemble uses; then the step configs list both; then the ensemble's
config.pbtxt, which pins each step's version, is replaced in one rename: the commit. Whatever the
moment a build stops, Triton loads either the old repository or the complete new one. Settings
that differ between versions (labels, lengths, pad id) live in each version's step.json, so versions
never share them through config.pbtxt. Each version's files are recorded with their sha256 in
`<name>/<version>/tft-serve.json`, which `tft serve start` checks before serving.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tft.errors import TftError
from tft.fsutil import atomic_write_json, atomic_write_text, file_sha256, make_temp_dir, pid_alive
from tft.manifest import (SERVE_MANIFEST, check_file, default_artifact, now, read_export_manifest, read_serve_record,
                          serving_fields)
from tft.manifest import versions as versions_info
from tft.predictions import max_chars_for
from tft.tasks import kind_of

log = logging.getLogger("tft")
MODELS_DIR = Path(__file__).parent / "models"
PREDICTIONS_PY = Path(__file__).resolve().parents[1] / "predictions.py"
@dataclass(frozen=True)
class Backend:
    """How one Triton backend serves the model step; a new backend is one entry in BACKENDS."""

    name: str
    model_file: str  # the file in the version folder
    runtime: str  # the export artifacts it serves (their manifest `runtime`)
    platform: str = ""  # Triton platform of a native backend
    backend: str = ""  # Triton backend of a Python-backend model
    python_model: str = ""  # its model.py, from tft/serve/models
    ragged: bool = False  # pads ragged batches itself; else fixed shapes: the tokenizer buckets lengths
    device: str = "any"  # cpu | gpu | any
    default_artifact: str = ""  # "" = the export's fp32 graph
    packages: tuple[str, ...] = ()  # what its model.py imports, beyond numpy and tokenizers


BACKENDS = {
    "python": Backend("python", "model.onnx", "onnxruntime", backend="python", python_model="onnx_model.py",
                      ragged=True, device="cpu", packages=("onnxruntime",)),
    "onnxruntime": Backend("onnxruntime", "model.onnx", "onnxruntime", platform="onnxruntime_onnx"),
    "tensorrt": Backend("tensorrt", "model.plan", "tensorrt", platform="tensorrt_plan", device="gpu",
                        default_artifact="tensorrt-fp16"),
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RepositoryError(TftError):
    """The model repository cannot be built from this export with these options."""


@dataclass
class BuildOptions:
    name: str
    backend: str = "python"
    max_batch: int = 64
    instances: int = 1
    queue_delay_us: int = 2000
    dynamic_batching: bool = True
    artifact: str | None = None  # export artifact for the model step (default: fp32)
    threads: int = 0  # ONNX Runtime intra-op threads per instance (0: its default)
    max_chars: int = 0  # cap per text before tokenizing (0: 32 x max_seq_length, at least 4096)
    device: str | None = None  # cpu | gpu; None: gpu for tensorrt, cpu otherwise
    ort_tensorrt: bool = False  # onnxruntime on GPUs: TensorRT as its execution accelerator
    ort_tensorrt_workspace: int = 1 << 30
    ort_tensorrt_cache: str = "/tmp/tft-ort-trt-cache"  # engine cache inside the server's container
    tensorrt_version: str | None = None  # the serving container's TensorRT: a TensorRT engine must match it

    @property
    def gpu(self) -> bool:
        return (self.device or ("gpu" if BACKENDS[self.backend].device == "gpu" else "cpu")) == "gpu"


def _dtype(name: str) -> int:
    return getattr(mc, name)


def _tensor(msg, name: str, dtype: str, dims, optional: bool = False, ragged: bool = False):
    t = msg.add()
    t.name, t.data_type = name, _dtype(dtype)
    t.dims.extend(dims)
    if optional:
        t.optional = True
    if ragged:
        t.allow_ragged_batch = True
    return t


def _parameters(config, values: dict) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _batching(config, opts: BuildOptions, wait: bool = False) -> None:
    """Dynamic batching on every step; only the model step waits (--queue-delay-us) for batch mates:
    the cheap Python steps take whatever is queued, so their delays do not add up along the ensemble."""
    config.max_batch_size = opts.max_batch
    if opts.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = opts.queue_delay_us if wait else 0


def _instances(config, opts: BuildOptions, gpu: bool = False) -> None:
    group = config.instance_group.add()
    group.count = opts.instances
    group.kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU


def to_pbtxt(config) -> str:
    return text_format.MessageToString(config)


def parse_pbtxt(text: str):
    return text_format.Parse(text, mc.ModelConfig())


class Layout:
    """Names, tensor shapes and per-version settings of one served model, from the export manifest."""

    def __init__(self, manifest: dict, opts: BuildOptions):
        self.manifest, self.opts = manifest, opts
        self.fields = serving_fields(manifest)  # never the checkpoint manifest: the export says what serving needs
        spec = kind_of(manifest["kind"])
        self.token_task = spec.per_token
        self.pair_task = spec.pair or (
            self.fields["text_pair_field"] is not None and not self.token_task)
        self.inputs = [i["name"] for i in manifest["inputs"]]
        self.labels = manifest["labels"]
        self.num_labels = max(1, len(self.labels))
        self.logits_dims = [-1, self.num_labels] if self.token_task else [self.num_labels]
        n = opts.name
        self.tokenizer, self.model, self.postprocess, self.ensemble = (
            f"{n}_tokenizer", f"{n}_model", f"{n}_postprocess", n)

    @property
    def steps(self) -> list[str]:
        return [self.tokenizer, self.model, self.postprocess]

    @property
    def outputs(self) -> list[tuple[str, str, list[int]]]:
        if self.token_task:
            return [("ENTITIES", "TYPE_STRING", [1])]
        return [("LABEL", "TYPE_STRING", [1]), ("SCORE", "TYPE_FP32", [1])]

    # -- per-version settings (step.json beside each Python-backend model.py) --------------------------
    def tokenizer_settings(self) -> dict:
        max_len = self.manifest["max_seq_length"]
        return {"max_seq_length": max_len,
                "max_chars": max_chars_for(max_len, self.opts.max_chars or self.fields["max_chars"]),
                "token_task": self.token_task, "pair_task": self.pair_task,
                "word_joiner": self.fields["word_joiner"],
                # fixed-shape backends batch only equal shapes: bucket lengths for them; Python pads ragged batches
                "pad_to_multiple_of": 1 if BACKENDS[self.opts.backend].ragged else 16,
                "pad_token_id": self.manifest["pad_token_id"]}

    def model_settings(self) -> dict:
        return {"onnx_file": "model.onnx", "token_task": self.token_task, "intra_op_threads": self.opts.threads,
                "pad_token_id": self.manifest["pad_token_id"]}

    def postprocess_settings(self) -> dict:
        return {"labels": self.labels, "token_task": self.token_task}

    # -- configs (what Triton needs: backend, tensors, batching, instances) -----------------------------
    def tokenizer_config(self):
        c = mc.ModelConfig(name=self.tokenizer, backend="python")
        _batching(c, self.opts)
        _tensor(c.input, "TEXT", "TYPE_STRING", [1])
        if self.pair_task:
            _tensor(c.input, "TEXT_PAIR", "TYPE_STRING", [1], optional=True)
        for name in self.inputs:
            _tensor(c.output, name, "TYPE_INT64", [-1])
        if self.token_task:
            _tensor(c.output, "OFFSETS", "TYPE_INT64", [-1, 2])
        _instances(c, self.opts)
        return c

    def model_config(self):
        backend = BACKENDS[self.opts.backend]
        c = mc.ModelConfig(name=self.model)
        if backend.backend:
            c.backend = backend.backend
        else:
            c.platform, c.default_model_filename = backend.platform, backend.model_file
        if backend.name == "onnxruntime" and self.opts.threads:
            _parameters(c, {"intra_op_thread_count": self.opts.threads})
        _batching(c, self.opts, wait=True)
        for name in self.inputs:
            _tensor(c.input, name, "TYPE_INT64", [-1], ragged=backend.ragged)
        _tensor(c.output, "logits", "TYPE_FP32", self.logits_dims)
        _instances(c, self.opts, gpu=self.opts.gpu)
        if self.opts.ort_tensorrt:  # per the onnxruntime_backend README: TensorRT inside ONNX Runtime
            accelerator = c.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accelerator.name = "tensorrt"
            for key, value in (("precision_mode", "FP16"), ("max_workspace_size_bytes", self.opts.ort_tensorrt_workspace),
                               ("trt_engine_cache_enable", "1"), ("trt_engine_cache_path", self.opts.ort_tensorrt_cache)):
                accelerator.parameters[key] = str(value)
        return c

    def postprocess_config(self):
        c = mc.ModelConfig(name=self.postprocess, backend="python")
        _batching(c, self.opts)
        _tensor(c.input, "logits", "TYPE_FP32", self.logits_dims)
        if self.token_task:
            _tensor(c.input, "TEXT", "TYPE_STRING", [1])
            _tensor(c.input, "OFFSETS", "TYPE_INT64", [-1, 2])
        for name, dtype, dims in self.outputs:
            _tensor(c.output, name, dtype, dims)
        _instances(c, self.opts)
        return c

    def ensemble_config(self, versions: dict[str, int], record_version: int):
        """The ensemble, pinned to one version of each step: replacing this file is a build's commit."""
        c = mc.ModelConfig(name=self.ensemble, platform="ensemble", max_batch_size=self.opts.max_batch)
        c.version_policy.specific.versions.append(record_version)
        _tensor(c.input, "TEXT", "TYPE_STRING", [1])
        if self.pair_task:
            _tensor(c.input, "TEXT_PAIR", "TYPE_STRING", [1], optional=True)
        for name, dtype, dims in self.outputs:
            _tensor(c.output, name, dtype, dims)

        def step(model, inputs: dict, outputs: dict):
            s = c.ensemble_scheduling.step.add()
            s.model_name, s.model_version = model, versions[model]
            for k, v in inputs.items():
                s.input_map[k] = v
            for k, v in outputs.items():
                s.output_map[k] = v

        tok_in = {"TEXT": "TEXT", **({"TEXT_PAIR": "TEXT_PAIR"} if self.pair_task else {})}
        tok_out = {n: f"_{n}" for n in self.inputs}
        if self.token_task:
            tok_out["OFFSETS"] = "_offsets"
        step(self.tokenizer, tok_in, tok_out)
        step(self.model, {n: f"_{n}" for n in self.inputs}, {"logits": "_logits"})
        post_in = {"logits": "_logits", **({"TEXT": "TEXT", "OFFSETS": "_offsets"} if self.token_task else {})}
        step(self.postprocess, post_in, {n: n for n, _, _ in self.outputs})
        f = self.fields
        # what a client needs to read the task's files and label answers, without the export folder
        _parameters(c, {"tft": json.dumps({
            "task": self.manifest["task"], "kind": self.manifest["kind"], "text_field": f["text_field"],
            "text_pair_field": f["text_pair_field"], "label_field": f["label_field"],
            "word_joiner": f["word_joiner"], "labels": self.labels,
            "max_seq_length": self.manifest["max_seq_length"]}, ensure_ascii=False),
            "tft_record": f"{record_version}/{SERVE_MANIFEST}"})
        return c


def _with_versions(config, versions: list[int]):
    c = mc.ModelConfig()
    c.CopyFrom(config)
    c.version_policy.Clear()
    c.version_policy.specific.versions.extend(sorted(set(versions)))
    return c


def _structure(config) -> tuple:
    """What a step's versions must share: backend and tensors (batching and instances may change)."""
    return (config.backend, config.platform, tuple(t.SerializeToString() for t in config.input),
            tuple(t.SerializeToString() for t in config.output))


def read_config(path: Path):
    try:
        return parse_pbtxt(path.read_text(encoding="utf-8"))
    except (OSError, text_format.ParseError) as e:
        raise RepositoryError(f"{path}: unreadable model config ({str(e).splitlines()[0]})") from None


def next_version(model_dir: Path) -> int:
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(numbers, default=0) + 1


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


def validate(export_dir: Path, repository: Path, opts: BuildOptions) -> tuple[dict, dict, Path, Path]:
    """Everything a build needs, checked before anything is written: (manifest, artifact, model file, tokenizer)."""
    manifest = read_export_manifest(export_dir)
    if not NAME_RE.match(opts.name):
        raise RepositoryError(f"--name {opts.name!r}: use letters, digits, '_', '-' and '.'")
    if opts.backend not in BACKENDS:
        raise RepositoryError(f"--backend {opts.backend!r}: choose one of {', '.join(BACKENDS)}")
    if not 1 <= opts.max_batch <= manifest["max_batch"]:
        raise RepositoryError(f"--max-batch {opts.max_batch}: must be 1..{manifest['max_batch']} "
                              f"(the export's parity was checked up to batch {manifest['max_batch']})")
    if opts.instances < 1:
        raise RepositoryError("--instances must be at least 1")
    if opts.device not in (None, "cpu", "gpu"):
        raise RepositoryError(f"--device {opts.device!r}: choose cpu or gpu")
    if opts.gpu and BACKENDS[opts.backend].device == "cpu":
        raise RepositoryError(f"--device gpu: the {opts.backend} backend runs ONNX Runtime on the CPU; use --backend "
                              "onnxruntime or tensorrt for GPUs")
    if not opts.gpu and BACKENDS[opts.backend].device == "gpu":
        raise RepositoryError(f"--backend {opts.backend} runs on GPUs only: drop --device cpu")
    if opts.ort_tensorrt and not (opts.backend == "onnxruntime" and opts.gpu):
        raise RepositoryError("--ort-tensorrt is ONNX Runtime's TensorRT accelerator: it needs --backend onnxruntime "
                              "--device gpu")
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"--repository {repository}: is a file, expected a folder")
    if repository.resolve() == export_dir.resolve() or export_dir.resolve() in repository.resolve().parents:
        raise RepositoryError(f"--repository {repository}: is inside the export {export_dir}; choose another folder")
    files = manifest.get("files", {})
    tokenizer_json = check_file(export_dir, manifest.get("tokenizer", "tokenizer.json"), files.get("tokenizer.json"))
    artifact = _pick_artifact(manifest, opts)
    model_file = check_file(export_dir, artifact["file"], artifact.get("sha256"))
    if model_file.suffix == ".onnx" and not kind_of(manifest["kind"]).regression:
        width = onnx_output_width(model_file)
        if width is not None and width != len(manifest["labels"]):
            raise RepositoryError(f"{model_file}: the model has {width} outputs but {export_dir / 'manifest.json'} "
                                  f"lists {len(manifest['labels'])} labels")
    return manifest, artifact, model_file, tokenizer_json


def _owned_models(repository: Path) -> set[str]:
    """Models that tft built into this repository (every step of every recorded ensemble)."""
    owned = set()
    for name, record in read_serve_manifests(repository).items():
        owned |= {name, *record.get("steps", [])}
    return owned


def build_repository(export_dir: str | Path, repository: str | Path, opts: BuildOptions) -> dict:
    export_dir, repository = Path(export_dir), Path(repository)
    manifest, artifact, model_file, tokenizer_json = validate(export_dir, repository, opts)
    if "pad_token_id" not in manifest:  # exports written before the manifest recorded it
        manifest = {**manifest, "pad_token_id": _pad_id(tokenizer_json)}
    layout = Layout(manifest, opts)
    names = [*layout.steps, layout.ensemble]
    owned = _owned_models(repository) if repository.is_dir() else set()
    for name in names:
        if (repository / name).exists() and name not in owned:
            raise RepositoryError(f"{repository / name}: a model that `tft serve build` did not write; tft never "
                                  "replaces what it did not write: use another --name or --repository")

    helper = PREDICTIONS_PY.read_text(encoding="utf-8")
    backend = BACKENDS[opts.backend]
    model_files: dict[str, Path | str] = {backend.model_file: model_file}
    if backend.python_model:
        model_files["model.py"] = (MODELS_DIR / backend.python_model).read_text(encoding="utf-8")
        model_files["step.json"] = json.dumps(layout.model_settings(), indent=2) + "\n"
    contents = {
        layout.tokenizer: (layout.tokenizer_config(), {
            "model.py": (MODELS_DIR / "tokenizer.py").read_text(encoding="utf-8"), "tft_predictions.py": helper,
            "tokenizer.json": tokenizer_json,
            "step.json": json.dumps(layout.tokenizer_settings(), ensure_ascii=False, indent=2) + "\n"}),
        layout.model: (layout.model_config(), model_files),
        layout.postprocess: (layout.postprocess_config(), {
            "model.py": (MODELS_DIR / "postprocess.py").read_text(encoding="utf-8"), "tft_predictions.py": helper,
            "step.json": json.dumps(layout.postprocess_settings(), ensure_ascii=False, indent=2) + "\n"}),
    }
    old_configs = {name: read_config(repository / name / "config.pbtxt") for name in layout.steps
                   if (repository / name / "config.pbtxt").exists()}
    old_record = read_serve_manifests(repository).get(layout.ensemble) if repository.is_dir() else None
    old_versions = old_record.get("model_versions", {}) if old_record else {}
    for name, old in old_configs.items():
        if _structure(old) != _structure(contents[name][0]):
            raise RepositoryError(f"{repository / name}: this export changes the model's backend or tensors "
                                  f"({opts.backend}, {layout.num_labels} labels); versions of one model must share "
                                  "them: serve it under another --name or in another --repository")

    repository.mkdir(parents=True, exist_ok=True)
    clean_stale(repository)
    versions = {name: next_version(repository / name) for name in names}
    record = {
        "format": "tft.serve/2", "name": opts.name, "ensemble": layout.ensemble, "version": versions[layout.ensemble],
        "steps": layout.steps, "backend": opts.backend,
        "artifact": artifact["name"], "artifact_sha256": artifact.get("sha256"), "export": str(export_dir.resolve()),
        # the chosen artifact's speed as export measured it, and (--artifact auto) what else was considered
        "artifact_rows_per_s": artifact.get("parity", {}).get("rows_per_s"),
        "artifact_latency_ms_p50": artifact.get("parity", {}).get("latency_ms_p50"),
        "artifact_choice": artifact.get("choice"),
        "kind": manifest["kind"], "task": manifest["task"], "pair": layout.pair_task, "labels": layout.labels,
        "outputs": [n for n, _, _ in layout.outputs], "max_batch": opts.max_batch, "instances": opts.instances,
        "device": "gpu" if opts.gpu else "cpu", "ort_tensorrt": opts.ort_tensorrt,
        "dynamic_batching": opts.dynamic_batching, "queue_delay_us": opts.queue_delay_us, "model_versions": versions,
        "canary": canary_item(export_dir, manifest, layout.pair_task),
        # what the Python-backend steps import, as installed here: a container needs these (numpy < 2 for
        # Triton's string tensors); deploy/Dockerfile and `tft serve deploy` read them from here
        "python_packages": python_packages(opts.backend),
        "files": {}, "created": now(), "versions": versions_info(),
    }
    staged: dict[str, Path] = {}
    try:
        # 1. stage every new version folder under a hidden name
        for name, (config, files) in contents.items():
            tmp = make_temp_dir(repository, f".{name}.tmp-{os.getpid()}-")
            vdir = tmp / str(versions[name])
            vdir.mkdir()
            for dest, src in files.items():
                _place_file(src, vdir / dest)
                record["files"][f"{name}/{versions[name]}/{dest}"] = file_sha256(vdir / dest)
            staged[name] = tmp
        tmp = make_temp_dir(repository, f".{layout.ensemble}.tmp-{os.getpid()}-")
        (tmp / str(versions[layout.ensemble])).mkdir()
        atomic_write_json(tmp / str(versions[layout.ensemble]) / SERVE_MANIFEST, record)
        staged[layout.ensemble] = tmp
        checkpoint("staged")
        # 2. new versions into place, invisible: each step's policy still lists only the versions in use
        for name in layout.steps:
            vdir = staged[name] / str(versions[name])
            if name in old_configs:
                in_use = [old_versions.get(name, versions[name] - 1)]
                atomic_write_text(repository / name / "config.pbtxt", to_pbtxt(_with_versions(old_configs[name], in_use)))
                os.replace(vdir, repository / name / str(versions[name]))
            else:
                (staged[name] / "config.pbtxt").write_text(
                    to_pbtxt(_with_versions(contents[name][0], [versions[name]])), encoding="utf-8")
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
                atomic_write_text(repository / name / "config.pbtxt", to_pbtxt(_with_versions(old_configs[name], in_use)))
                checkpoint(f"both versions of {name}")
        # 4. the commit: the ensemble pinned to the new versions, in one rename
        ensemble = to_pbtxt(layout.ensemble_config(versions, versions[layout.ensemble]))
        if ensemble_dir.exists():
            atomic_write_text(ensemble_dir / "config.pbtxt", ensemble)
        else:
            (staged[layout.ensemble] / "config.pbtxt").write_text(ensemble, encoding="utf-8")
            os.replace(staged[layout.ensemble], ensemble_dir)
        checkpoint("committed")
        # 5. tidy: steps keep only the new version loaded; the record's copy at the top for people
        for name in layout.steps:
            atomic_write_text(repository / name / "config.pbtxt",
                              to_pbtxt(_with_versions(contents[name][0], [versions[name]])))
        atomic_write_json(ensemble_dir / SERVE_MANIFEST, record)
        write_requirements(repository, record)
    finally:
        for tmp in staged.values():
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return record


REQUIREMENTS = "tft-requirements.txt"


def write_requirements(repository: Path, current: dict) -> None:
    """<repository>/tft-requirements.txt: what every tft model in it imports (deploy/Dockerfile installs it)."""
    pins: dict[str, str] = {}
    for record in [current, *read_serve_manifests(repository).values()]:
        for requirement in record.get("python_packages", []):
            pins.setdefault(re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0], requirement)
    atomic_write_text(repository / REQUIREMENTS, "".join(f"{r}\n" for r in sorted(pins.values())))


def python_packages(backend: str) -> list[str]:
    """numpy and tokenizers (the tokenizer and postprocess steps) and the model step's own, as installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("numpy", "tokenizers", *BACKENDS[backend].packages)]


def canary_item(export_dir: Path, manifest: dict, pair: bool) -> dict:
    """A real example for health checks: the one the export recorded (its first parity text)."""
    canary = manifest.get("canary") if isinstance(manifest.get("canary"), dict) else {}
    item = {"text": str(canary.get("text") or "canary")[:1000]}
    if pair:
        item["text_pair"] = str(canary.get("text_pair") or item["text"])[:1000]
    return item


# Triton container tag -> the TensorRT it bundles, copied from the "Release Compatibility Matrix" of Triton's
# user guide (docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/compatibility.html,
# table "Container Name: trtllm-python-py3", read 2026-11-23). Only tags that table lists: the plain `-py3`
# images bundle other TensorRT builds, listed in NVIDIA's Frameworks Support Matrix; pass those as
# --tensorrt-version rather than guess.
TRITON_IMAGE_TENSORRT = {
    "24.05-trtllm-python-py3": "10.0.1.6", "24.06-trtllm-python-py3": "10.0.1",
    "24.07-trtllm-python-py3": "10.1.0", "24.08-trtllm-python-py3": "10.3.0",
    "24.09-trtllm-python-py3": "10.4.0", "24.10-trtllm-python-py3": "10.4.0",
    "24.11-trtllm-python-py3": "10.6.0", "24.12-trtllm-python-py3": "10.7.0",
    "25.01-trtllm-python-py3": "10.8.0.43", "25.06-trtllm-python-py3": "10.10.0.31",
    "25.07-trtllm-python-py3": "10.10.0.31", "25.08-trtllm-python-py3": "10.11.0.33",
    "25.09-trtllm-python-py3": "10.11.0.33", "25.10-trtllm-python-py3": "10.11.0.33",
    "25.11-trtllm-python-py3": "10.13.3.9", "25.12-trtllm-python-py3": "10.13.3.9",
}


def tensorrt_of_image(image: str) -> str:
    """The TensorRT bundled in a Triton image (`nvcr.io/nvidia/tritonserver:TAG` or TAG), from the table above."""
    tag = image.rsplit(":", 1)[-1]
    if tag not in TRITON_IMAGE_TENSORRT:
        known = ", ".join(sorted({t.split("-", 1)[0] for t in TRITON_IMAGE_TENSORRT}))
        raise RepositoryError(f"--triton-image {image!r}: tft's table (Triton's compatibility matrix) lists only the "
                              f"-trtllm-python-py3 images of {known}; pass the container's TensorRT as "
                              "--tensorrt-version X.Y.Z (NVIDIA's Frameworks Support Matrix lists it)")
    return TRITON_IMAGE_TENSORRT[tag]


def engine_loads_on(built: str, serving: str, version_compatible: bool) -> bool:
    """An engine loads on the TensorRT that built it (major.minor.patch); a version-compatible one also on
    later releases of the same major."""
    def parts(version):
        return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])

    b, s = parts(built), parts(serving)
    if version_compatible:
        return b[:1] == s[:1] and s >= b
    return b == s


# `--artifact auto` serves only artifacts whose answers never changed with their batch on the dev rows export
# measured: served answers must be reproducible offline (verify's "served equals the exported artifact" gate)
AUTO_MIN_BATCH_INVARIANCE = 1.0
AUTO_PRECISIONS = {"cpu": ("fp32", "int8"), "gpu": ("fp32", "fp16")}  # what each device runs fast


def choose_artifact(manifest: dict, runtime: str, device: str) -> tuple[dict, list[dict]]:
    """`--artifact auto`: the fastest artifact (rows/s measured by export's serving-batch parity) that this
    backend's runtime serves on this device, whose gate passed and whose answers are batch-invariant.
    Returns (the choice, every artifact considered with its figures and why it was or was not taken)."""
    considered, best = [], None
    for art in manifest["artifacts"]:
        parity = art.get("parity", {})
        entry = {"name": art["name"], "rows_per_s": parity.get("rows_per_s"), "batch_invariance":
                 parity.get("batch_invariance"), "latency_ms_p50": parity.get("latency_ms_p50")}
        if art.get("runtime", "onnxruntime") != runtime:
            entry["skipped"] = f"runs on {art.get('runtime')}"
        elif art["precision"] not in AUTO_PRECISIONS[device]:
            entry["skipped"] = f"{art['precision']} is not fast on the {device}"
        elif not parity.get("passed", False):
            entry["skipped"] = "its parity gate did not pass"
        elif entry["rows_per_s"] is None:
            entry["skipped"] = "no speed measured (exported before tft measured it)"
        elif entry["batch_invariance"] is not None and entry["batch_invariance"] < AUTO_MIN_BATCH_INVARIANCE:
            entry["skipped"] = f"answers change with the batch ({1 - entry['batch_invariance']:.2%} of dev)"
        elif best is None or entry["rows_per_s"] > best[1]["rows_per_s"]:
            best = (art, entry)
        considered.append(entry)
    if best is None:
        fallback = default_artifact(manifest)
        for entry in considered:
            entry["chosen"] = entry["name"] == fallback["name"]
        return fallback, considered
    for entry in considered:
        entry["chosen"] = entry is best[1]
    return best[0], considered


def describe_choice(entry: dict) -> str:
    """One line of `--artifact auto`'s record: an artifact, its measured speed, why it was skipped."""
    speed = f"{entry['rows_per_s']:.0f} rows/s" if entry.get("rows_per_s") else "speed not measured"
    return f"{entry['name']} ({speed}){': ' + entry['skipped'] if entry.get('skipped') else ''}"


def _pick_artifact(manifest: dict, opts: BuildOptions) -> dict:
    backend = BACKENDS[opts.backend]
    if backend.runtime == "tensorrt":
        wanted = opts.artifact if opts.artifact not in (None, "auto") else backend.default_artifact
        for art in manifest["artifacts"]:
            if art["name"] == wanted and art.get("runtime") == "tensorrt":
                built = art.get("tensorrt_version")
                if opts.tensorrt_version and built and not engine_loads_on(built, opts.tensorrt_version,
                                                                           bool(art.get("version_compatible"))):
                    raise RepositoryError(
                        f"{art['file']} was built by TensorRT {built}"
                        f"{' (version-compatible)' if art.get('version_compatible') else ''}; the server's TensorRT "
                        f"{opts.tensorrt_version} cannot load it: export it again with that TensorRT (inside that "
                        "container), or with --trt-version-compatible")
                return art
        raise RepositoryError("the export has no TensorRT engine; run `tft export --trt` on a machine with "
                              "an NVIDIA GPU and TensorRT, or use --backend onnxruntime|python")
    if opts.artifact == "auto":
        try:
            chosen, considered = choose_artifact(manifest, backend.runtime, "gpu" if opts.gpu else "cpu")
        except TftError as e:
            raise RepositoryError(str(e)) from None
        return {**chosen, "choice": considered}
    if opts.artifact:
        for art in manifest["artifacts"]:
            if art["name"] == opts.artifact and art.get("runtime", "onnxruntime") == "onnxruntime":
                return art
        names = ", ".join(a["name"] for a in manifest["artifacts"] if a.get("runtime") != "tensorrt")
        raise RepositoryError(f"--artifact {opts.artifact!r}: the export has {names}")
    try:
        return default_artifact(manifest)
    except TftError as e:
        raise RepositoryError(str(e)) from None


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


def _record_of(model_dir: Path) -> dict | None:
    """The serve record of the version the ensemble's config.pbtxt points at (the committed one)."""
    config_path = model_dir / "config.pbtxt"
    candidates = []
    try:
        params = parse_pbtxt(config_path.read_text(encoding="utf-8")).parameters
        if "tft_record" in params:
            candidates.append(model_dir / params["tft_record"].string_value)
    except (OSError, text_format.ParseError):
        pass
    candidates.append(model_dir / SERVE_MANIFEST)  # repositories built before records were versioned
    for i, path in enumerate(candidates):
        if not path.exists() and i < len(candidates) - 1:
            continue
        try:
            return read_serve_record(path)
        except TftError as e:
            if i < len(candidates) - 1:  # the record the committed config names is damaged: say so
                raise RepositoryError(str(e)) from None
    return None


def read_serve_manifests(repository: str | Path) -> dict[str, dict]:
    """{ensemble name: its committed serve record} for every tft-built model in a repository."""
    out = {}
    repository = Path(repository)
    if not repository.is_dir():
        return out
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (model_dir / SERVE_MANIFEST).exists() or (model_dir / "config.pbtxt").exists():
            record = _record_of(model_dir)
            if record is not None and record.get("ensemble") == model_dir.name:
                out[record["ensemble"]] = record
    return out


def check_integrity(repository: str | Path) -> int:
    """Every file each committed build recorded is there with the sha256 it had; returns the files checked."""
    repository = Path(repository)
    checked = 0
    for name, record in read_serve_manifests(repository).items():
        for rel, sha in record.get("files", {}).items():
            path = repository / rel
            if not path.is_file():
                raise RepositoryError(f"{path}: missing; `tft serve build` wrote it for {name} "
                                      f"v{record.get('version')} (build again)")
            if file_sha256(path) != sha:
                raise RepositoryError(f"{path}: differs from what `tft serve build` wrote for {name} "
                                      f"v{record.get('version')} (sha256 changed); build again or restore it")
            checked += 1
    return checked
