"""`tft serve build`: an export folder -> a Triton model repository of four models.

    <name>_tokenizer   Python backend: TEXT (+ TEXT_PAIR) -> token ids (+ OFFSETS for NER)
    <name>_model       onnxruntime_onnx | tensorrt_plan | Python backend running ONNX Runtime
    <name>_postprocess Python backend: logits -> LABEL, SCORE | ENTITIES
    <name>             the ensemble wiring the three: text in, answers out

Every config.pbtxt is a `ModelConfig` protobuf printed with `text_format`, so its syntax is right by
construction (and tests parse each back). A model that is new to the repository is written in a
temporary sibling folder and renamed into place; a model that exists gets version N+1, written
under a hidden name and renamed, then its config replaced atomically. The ensemble goes last, so it
never points at steps that are not there yet.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tft.errors import TftError
from tft.export.runtime import default_artifact, read_export_manifest
from tft.fsutil import atomic_write_json, atomic_write_text
from tft.manifest import now, versions

log = logging.getLogger("tft")
MODELS_DIR = Path(__file__).parent / "models"
PREDICTIONS_PY = Path(__file__).resolve().parents[1] / "predictions.py"
SERVE_MANIFEST = "tft-serve.json"
BACKENDS = ("python", "onnxruntime", "tensorrt")
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
    """Names and tensor shapes of one served model, from the export manifest."""

    def __init__(self, manifest: dict, opts: BuildOptions):
        self.manifest, self.opts = manifest, opts
        self.token_task = manifest["kind"] == "token_classification"
        self.pair_task = manifest["kind"] == "pair_classification" or (
            manifest["checkpoint_manifest"].get("text_pair_field") is not None and not self.token_task)
        self.inputs = [i["name"] for i in manifest["inputs"]]
        self.labels = manifest["labels"]
        self.num_labels = max(1, len(self.labels))
        self.logits_dims = [-1, self.num_labels] if self.token_task else [self.num_labels]
        n = opts.name
        self.tokenizer, self.model, self.postprocess, self.ensemble = (
            f"{n}_tokenizer", f"{n}_model", f"{n}_postprocess", n)

    @property
    def outputs(self) -> list[tuple[str, str, list[int]]]:
        if self.token_task:
            return [("ENTITIES", "TYPE_STRING", [1])]
        return [("LABEL", "TYPE_STRING", [1]), ("SCORE", "TYPE_FP32", [1])]

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
        max_len = self.manifest["max_seq_length"]
        cm = self.manifest["checkpoint_manifest"]
        _parameters(c, {
            "max_seq_length": max_len,
            "max_chars": self.opts.max_chars or max(4096, 32 * max_len),
            "token_task": int(self.token_task), "pair_task": int(self.pair_task),
            "word_joiner": json.dumps(cm.get("word_joiner", " ")),
            # fixed-shape backends batch only equal shapes: bucket lengths for them; Python pads ragged batches
            "pad_to_multiple_of": 1 if self.opts.backend == "python" else 16,
            "pad_token_id": self.manifest.get("pad_token_id", 0),
        })
        return c

    def model_config(self):
        backend = self.opts.backend
        c = mc.ModelConfig(name=self.model)
        if backend == "python":
            c.backend = "python"
            _parameters(c, {"onnx_file": "model.onnx", "token_task": int(self.token_task),
                            "intra_op_threads": self.opts.threads,
                            "pad_token_id": self.manifest.get("pad_token_id", 0)})
        elif backend == "onnxruntime":
            c.platform, c.default_model_filename = "onnxruntime_onnx", "model.onnx"
            if self.opts.threads:
                _parameters(c, {"intra_op_thread_count": self.opts.threads})
        else:
            c.platform, c.default_model_filename = "tensorrt_plan", "model.plan"
        _batching(c, self.opts, wait=True)
        for name in self.inputs:
            _tensor(c.input, name, "TYPE_INT64", [-1], ragged=backend == "python")
        _tensor(c.output, "logits", "TYPE_FP32", self.logits_dims)
        _instances(c, self.opts, gpu=backend == "tensorrt")
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
        _parameters(c, {"labels": json.dumps(self.labels, ensure_ascii=False), "token_task": int(self.token_task)})
        return c

    def ensemble_config(self):
        c = mc.ModelConfig(name=self.ensemble, platform="ensemble", max_batch_size=self.opts.max_batch)
        _tensor(c.input, "TEXT", "TYPE_STRING", [1])
        if self.pair_task:
            _tensor(c.input, "TEXT_PAIR", "TYPE_STRING", [1], optional=True)
        for name, dtype, dims in self.outputs:
            _tensor(c.output, name, dtype, dims)

        def step(model, inputs: dict, outputs: dict):
            s = c.ensemble_scheduling.step.add()
            s.model_name, s.model_version = model, -1
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
        cm = self.manifest["checkpoint_manifest"]
        # what a client needs to read the task's files and label answers, without the export folder
        _parameters(c, {"tft": json.dumps({
            "task": cm["task"], "kind": cm["kind"], "text_field": cm.get("text_field"),
            "text_pair_field": cm.get("text_pair_field"), "label_field": cm.get("label_field"),
            "word_joiner": cm.get("word_joiner", " "), "labels": self.labels,
            "max_seq_length": self.manifest["max_seq_length"]}, ensure_ascii=False)})
        return c


def next_version(model_dir: Path) -> int:
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(numbers, default=0) + 1


def clean_stale(repository: Path) -> None:
    """Remove what a killed build left: hidden temporary folders (never visible to Triton as models)."""
    if not repository.is_dir():
        return
    for path in list(repository.glob(".*.tmp-*")) + list(repository.glob("*/.*.tmp-*")):
        shutil.rmtree(path, ignore_errors=True)


def _write_model(repository: Path, name: str, config, files: dict[str, Path | str | None]) -> int:
    """Write one model (config + version folder with `files`: dest name -> source path, text or None)."""
    model_dir = repository / name
    version = next_version(model_dir)
    is_new = not model_dir.exists()
    staging_parent = repository if is_new else model_dir
    tmp = Path(tempfile.mkdtemp(prefix=f".{name if is_new else version}.tmp-", dir=staging_parent))
    try:
        vdir = (tmp / str(version)) if is_new else tmp
        vdir.mkdir(exist_ok=True)
        for dest, src in files.items():
            if isinstance(src, Path):
                try:
                    os.link(src, vdir / dest)  # same filesystem: no copy of a large model
                except OSError:
                    shutil.copy2(src, vdir / dest)
            elif src is not None:
                (vdir / dest).write_text(src, encoding="utf-8")
        if is_new:
            (tmp / "config.pbtxt").write_text(to_pbtxt(config), encoding="utf-8")
            os.replace(tmp, model_dir)
        else:
            os.replace(tmp, model_dir / str(version))
            atomic_write_text(model_dir / "config.pbtxt", to_pbtxt(config))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return version


def build_repository(export_dir: str | Path, repository: str | Path, opts: BuildOptions) -> dict:
    export_dir, repository = Path(export_dir), Path(repository)
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
    tokenizer_json = export_dir / manifest.get("tokenizer", "tokenizer.json")
    if not tokenizer_json.exists():
        raise RepositoryError(f"{tokenizer_json}: not found; the export has no fast tokenizer")
    artifact = _pick_artifact(manifest, opts)
    model_file = export_dir / artifact["file"]
    if not model_file.exists():
        raise RepositoryError(f"{model_file}: listed in the manifest but missing")
    manifest = {**manifest, "pad_token_id": _pad_id(export_dir)}
    layout = Layout(manifest, opts)

    repository.mkdir(parents=True, exist_ok=True)
    clean_stale(repository)
    helper = PREDICTIONS_PY.read_text(encoding="utf-8")
    model_files = {"model.plan" if opts.backend == "tensorrt" else "model.onnx": model_file}
    if opts.backend == "python":
        model_files["model.py"] = (MODELS_DIR / "onnx_model.py").read_text(encoding="utf-8")
    written = {
        layout.tokenizer: _write_model(repository, layout.tokenizer, layout.tokenizer_config(), {
            "model.py": (MODELS_DIR / "tokenizer.py").read_text(encoding="utf-8"),
            "tft_predictions.py": helper, "tokenizer.json": tokenizer_json}),
        layout.model: _write_model(repository, layout.model, layout.model_config(), model_files),
        layout.postprocess: _write_model(repository, layout.postprocess, layout.postprocess_config(), {
            "model.py": (MODELS_DIR / "postprocess.py").read_text(encoding="utf-8"), "tft_predictions.py": helper}),
    }
    ensemble_version = _write_model(repository, layout.ensemble, layout.ensemble_config(), {})
    written[layout.ensemble] = ensemble_version
    record = {
        "format": "tft.serve/1", "name": opts.name, "ensemble": layout.ensemble, "version": ensemble_version,
        "steps": [layout.tokenizer, layout.model, layout.postprocess], "backend": opts.backend,
        "artifact": artifact["name"], "artifact_sha256": artifact.get("sha256"), "export": str(export_dir.resolve()),
        "kind": manifest["kind"], "task": manifest["task"], "pair": layout.pair_task, "labels": layout.labels,
        "outputs": [n for n, _, _ in layout.outputs], "max_batch": opts.max_batch, "instances": opts.instances,
        "dynamic_batching": opts.dynamic_batching, "queue_delay_us": opts.queue_delay_us, "model_versions": written,
        "created": now(), "versions": versions(),
    }
    atomic_write_json(repository / layout.ensemble / SERVE_MANIFEST, record)
    return record


def _pick_artifact(manifest: dict, opts: BuildOptions) -> dict:
    if opts.backend == "tensorrt":
        wanted = opts.artifact or "tensorrt-fp16"
        for art in manifest["artifacts"]:
            if art["name"] == wanted and art.get("runtime") == "tensorrt":
                return art
        raise RepositoryError("the export has no TensorRT engine; run `tft export --trt` on a machine with "
                              "an NVIDIA GPU and TensorRT, or use --backend onnxruntime|python")
    if opts.artifact:
        for art in manifest["artifacts"]:
            if art["name"] == opts.artifact and art.get("runtime", "onnxruntime") == "onnxruntime":
                return art
        names = ", ".join(a["name"] for a in manifest["artifacts"] if a.get("runtime") != "tensorrt")
        raise RepositoryError(f"--artifact {opts.artifact!r}: the export has {names}")
    return default_artifact(manifest)


def _pad_id(export_dir: Path) -> int:
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
        for token in ("[PAD]", "<pad>"):
            if tok.token_to_id(token) is not None:
                return int(tok.token_to_id(token))
    except Exception:  # noqa: BLE001 - a tokenizer without a pad token pads with 0, as the collator does
        pass
    return 0


def read_serve_manifests(repository: str | Path) -> dict[str, dict]:
    """{ensemble name: its tft-serve.json} for every tft-built model in a repository."""
    out = {}
    for path in sorted(Path(repository).glob(f"*/{SERVE_MANIFEST}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        out[record["ensemble"]] = record
    return out
