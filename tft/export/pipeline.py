"""`tft export`: checkpoint -> ONNX fp32 (+ optimized, int8, fp16) [-> TensorRT], each parity-checked.

The ONNX export dir is built in a temporary folder and renamed into place only when every artifact
passed; a failing artifact fails the command and leaves nothing. TensorRT runs after that, so a
machine without a GPU still ends with complete ONNX artifacts (and a non-zero exit saying why).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from tft.data.dataset import load_dataset
from tft.data.features import encode
from tft.export import onnx_export, quantize
from tft.export.config import ExportError, onnx_config_for
from tft.families import family_of, usable_positions
from tft.export.options import CANDIDATE_PRECISIONS, ExportConfig
from tft.export.parity import ParityError, compare, parity_batches, serving_batches
from tft.predictions import MODEL_INPUTS, pad_batch
from tft.export.runtime import runner_for
from tft.export.speed import measure_artifacts, serving_rows, speed_batches
from tft.fsutil import (atomic_dir, atomic_write_json, check_free_space, check_output_dir, file_sha256, hold,
                        mark_owned)
from tft.inference import items_from_examples, task_of
from tft.manifest import (EXPORT_MANIFEST, check_tokenizer_files, default_opt_shape, now, read_checkpoint_manifest,
                          versions)
from tft.tasks import kind_from, kind_of

log = logging.getLogger("tft")
EXPORT_FORMAT = "tft.export/1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
                   "tft.json")


def earlier_export(path: Path, entries: list[str]) -> str | None:
    """An export an older tft wrote (before ownership markers), proven by content: None when every file in it is
    one its manifest records with that sha256; else the first file that is not (names alone prove nothing: a user
    copies an export's files by hand and edits one)."""
    try:
        manifest = json.loads((Path(path) / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{EXPORT_MANIFEST} is not a tft export manifest"
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("tft.export/"):
        return f"{EXPORT_MANIFEST} is not a tft export manifest"
    recorded = dict(manifest.get("files") or {})
    for a in manifest.get("artifacts", ()):
        if isinstance(a, dict) and a.get("file"):
            recorded[a["file"]] = a.get("sha256")
            if a.get("weights_file"):
                recorded[a["weights_file"]] = a.get("weights_sha256")
    for name in sorted(entries):
        if name == EXPORT_MANIFEST:
            continue
        if name not in recorded or not recorded[name] or (Path(path) / name).is_dir():
            return f"{name} is not a file of this export"
        if file_sha256(Path(path) / name) != recorded[name]:
            return f"{name} was changed after tft wrote it"
    return None


def default_output_dir(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint).resolve()
    run = checkpoint.parent.name if checkpoint.name == "best" else checkpoint.name
    return Path("exports") / run


def parity_inputs(checkpoint_manifest, tokenizer, hf_config, max_batch, max_len, samples, parity_data):
    """Real dev examples (or --parity-data) with labels, plus edge shapes."""
    task = task_of(checkpoint_manifest)
    labels = tuple(checkpoint_manifest["labels"])
    if parity_data:
        from tft.data.readers import READERS

        path = Path(parity_data)
        examples = READERS[task.reader](path, task, require_label=False).examples
    else:
        ds = load_dataset(task, checkpoint_manifest["data_dir"], ("dev",), labels=labels)
        examples = ds["dev"].examples
    examples = examples[:samples]
    if not examples:
        raise ExportError(f"no examples to check parity on{' in ' + str(parity_data) if parity_data else ''}")
    features = encode(examples, tokenizer, max_len, labels, task.kind, checkpoint_manifest.get("max_chars")).features
    names = [n for n in MODEL_INPUTS if n in features[0]]
    canary = items_from_examples(examples[:1], task)[0]
    pad_id, left = tokenizer.pad_token_id or 0, tokenizer.padding_side == "left"
    batches = parity_batches(features, names, max_batch, max_len, hf_config.vocab_size,
                             tokenizer.cls_token_id or 0, tokenizer.sep_token_id or 0, pad_id=pad_id, left=left)
    serving = (serving_batches(features, names, max_batch, pad_id=pad_id, left=left)
               if features[0].get("labels") is not None else None)
    return batches, serving, canary


def calibration_inputs(checkpoint_manifest, tokenizer, max_len, samples: int, names, batch_size: int = 16):
    """Padded batches of the first `samples` training inputs: what static int8 fixes its scales on."""
    task = task_of(checkpoint_manifest)
    ds = load_dataset(task, checkpoint_manifest["data_dir"], ("train",), labels=tuple(checkpoint_manifest["labels"]))
    features = encode(ds["train"].examples[:samples], tokenizer, max_len, tuple(checkpoint_manifest["labels"]), task.kind,
                      checkpoint_manifest.get("max_chars")).features
    if not features:
        raise ExportError("static int8: no training examples to calibrate on")
    # one width for all: histogram calibrators stack the batches
    width = max(len(f["input_ids"]) for f in features)
    return [pad_batch(features[i:i + batch_size], names, tokenizer.pad_token_id or 0, width,
                      left=tokenizer.padding_side == "left")
            for i in range(0, len(features), batch_size)]


class ShapeOptionError(ExportError):
    """A shape option out of range or out of order: a usage error (exit 2), found before any work."""

    exit_code = 2


def check_shapes(max_batch: int, max_len: int, opt_batch: int, opt_len: int | None, positions: int | None) -> None:
    """Profile and parity shapes, checked before any export work (one line each, exit 2)."""
    for option, value in (("--max-batch", max_batch), ("--max-seq-length", max_len), ("--opt-batch", opt_batch),
                          ("--opt-seq-length", opt_len)):
        if value is not None and value < 1:
            raise ShapeOptionError(f"{option} {value}: must be at least 1")
    if opt_batch > max_batch:
        raise ShapeOptionError(f"--opt-batch {opt_batch}: must not exceed --max-batch {max_batch}")
    if opt_len is not None and opt_len > max_len:
        raise ShapeOptionError(f"--opt-seq-length {opt_len}: must not exceed --max-seq-length {max_len}")
    if positions and max_len > positions:
        raise ShapeOptionError(f"--max-seq-length {max_len}: the model has {positions} positions")


def check_labels(cm: dict, hf_config, checkpoint: Path) -> None:
    """The label list in tft.json must match the model's outputs (a hand-edited tft.json would mislabel answers)."""
    if not kind_of(cm["kind"]).has_labels:
        return
    if len(cm["labels"]) != hf_config.num_labels:
        raise ExportError(f"{checkpoint / 'tft.json'}: lists {len(cm['labels'])} labels but the model has "
                          f"{hf_config.num_labels} outputs; was tft.json edited?")


def run_export(checkpoint, cfg: ExportConfig | None = None, **options) -> Path:
    """Export a checkpoint under `cfg` (or ExportConfig(**options)). With `cfg.optional_candidates` an int8 artifact
    that fails its gate is recorded under "rejected" (never served) instead of failing the export; the pipeline
    offers int8 as a candidate, `tft export --int8` demands it."""
    cfg = cfg if cfg is not None else ExportConfig(**options)
    checkpoint = Path(checkpoint)
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(checkpoint)
    run_dir = checkpoint.parent if checkpoint.name == "best" else None

    def check() -> bool:
        return check_output_dir(out, what="export", marker=EXPORT_MANIFEST, overwrite=cfg.overwrite,
                                protect=(checkpoint, run_dir), legacy=earlier_export)

    check()  # before the lock: a destination never to be written gets no lock file beside it
    check_free_space(out, export_size_estimate(checkpoint, cfg), what="this export")
    with hold(out, wait=cfg.wait):
        return _export(checkpoint, out, cfg, replace=check())  # again: what another writer did meanwhile


def export_size_estimate(checkpoint: Path, cfg: ExportConfig) -> int:
    """Bytes an export writes, from the checkpoint's weights: the fp32 and fused graphs about their size each, an
    int8 graph a quarter, fp16 a half, TensorRT engines about the fp16 graph; 10% to spare."""
    weights = sum(p.stat().st_size for p in Path(checkpoint).glob("*.safetensors"))
    factor = 2 + 0.25 * (bool(cfg.int8) + bool(cfg.int8_static)) + 0.5 * bool(cfg.fp16 or cfg.trt) + 0.5 * bool(cfg.trt) \
        + 1.0 * bool(cfg.openvino or cfg.openvino_int8) + 0.5 * bool(cfg.openvino_int8)
    return int(weights * factor * 1.1)


def _export(checkpoint: Path, out: Path, cfg: ExportConfig, replace: bool) -> Path:
    run = ExportRun(checkpoint, cfg)
    with atomic_dir(out, overwrite=replace, owned_as="export") as tmp:
        run.write_graphs(tmp)
        # every servable CPU artifact timed warm, side by side, at serving batch sizes: what `--artifact auto` ranks
        measured_on = measure_artifacts(run.artifacts, run.runners, speed_batches(
            run.speed_rows, run.onnx_cfg.inputs, run.max_batch, run.tokenizer))
        manifest = run.manifest(tmp, measured_on)
        atomic_write_json(tmp / EXPORT_MANIFEST, manifest)
    log.info("wrote %s (%s)", out, ", ".join(a["name"] for a in run.artifacts))
    if cfg.trt:
        run.tensorrt(out, manifest)
    return out


class ExportRun:
    """One export, in the order it happens: setup (the checkpoint, its shapes and the parity inputs, checked before
    any file is written), each artifact written and checked against PyTorch, the manifest; TensorRT after."""

    def __init__(self, checkpoint: Path, cfg: ExportConfig):
        from transformers import AutoConfig, AutoTokenizer

        self.checkpoint, self.cfg = checkpoint, cfg
        self.cm = cm = read_checkpoint_manifest(checkpoint)
        check_tokenizer_files(checkpoint, cm.get("files"))
        self.max_batch, self.max_len = cfg.max_batch, cfg.max_seq_length or cm["max_seq_length"]
        self.thresholds = cfg.thresholds()
        if cfg.parity_samples < 1:
            raise ExportError(f"--parity-samples {cfg.parity_samples}: must be at least 1")
        self.hf_config = AutoConfig.from_pretrained(checkpoint)
        default_batch, self.default_len = default_opt_shape(self.max_batch, self.max_len)
        self.opt_batch, self.opt_seq_length = cfg.opt_batch or default_batch, cfg.opt_seq_length
        check_shapes(self.max_batch, self.max_len, self.opt_batch, self.opt_seq_length,
                     usable_positions(family_of(self.hf_config.model_type, quiet=True), self.hf_config))
        check_labels(cm, self.hf_config, checkpoint)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.onnx_cfg = onnx_config_for(cm, self.hf_config, cfg.opset)
        self.model = onnx_export.load_for_export(checkpoint, cm["kind"])
        batches, serving, self.canary = parity_inputs(cm, self.tokenizer, self.hf_config, self.max_batch,
                                                      self.max_len, cfg.parity_samples, cfg.parity_data)
        self.speed_rows = [row for _, row in serving_rows(serving)]
        names = self.onnx_cfg.inputs
        self.batches = [(n, {k: v for k, v in b.items() if k in names}, lab) for n, b, lab in batches]
        self.serving = [(lab, {k: v for k, v in b.items() if k in names}) for lab, b in serving or ()]
        self.labels = tuple(cm["labels"])
        self.artifacts, self.rejected, self.runners = [], [], {}
        self._reference_logits: dict[int, np.ndarray] = {}
        # the reference in true fp32: TF32 off for PyTorch's matmuls and convolutions (it matters on Ampere and newer)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    @torch.no_grad()
    def reference(self, batch):
        # PyTorch once per batch, whatever the number of artifacts compared against it (the batch lists
        # live as long as this export, so a batch's id stays its own)
        if id(batch) not in self._reference_logits:
            outputs = self.model(**{k: torch.from_numpy(v) for k, v in batch.items()})
            self._reference_logits[id(batch)] = outputs.logits.float().numpy()
        return self._reference_logits[id(batch)]

    def check(self, name, precision, path, runtime="onnxruntime", runner=None, extra=None, optional=False):
        """Compare an artifact with PyTorch and record it; a failure raises, unless the artifact is a candidate
        (`optional`, or the pipeline's int8/bf16), which is set aside under `rejected` with its files."""
        cfg, cm = self.cfg, self.cm
        runner = runner or runner_for(path, {"runtime": runtime, "precision": precision, **(extra or {})},
                                      device=cfg.device)
        try:
            result = compare(self.reference, runner, self.batches, artifact=name, precision=precision,
                             kind=kind_from(cm), labels=self.labels, main_metric=cm["main_metric"],
                             thresholds=self.thresholds[precision], serving=self.serving)
        except ParityError as e:
            if not (optional or (cfg.optional_candidates and precision in CANDIDATE_PRECISIONS)):
                raise
            log.warning("parity %-15s rejected, not servable: %s", name, e)
            self.rejected.append({"name": name, "precision": precision, "reason": str(e)})
            _drop_unshared(path, extra, self.artifacts)
            return
        log.info("parity %-15s max|diff| %.2e  mean %.2e  agreement %.2f%%%s%s", name, result.max_abs_diff,
                 result.mean_abs_diff, 100 * result.agreement,
                 f"  dev {result.metric} {result.metric_artifact:.4f} (PyTorch {result.metric_pytorch:.4f})"
                 if result.metric else "",
                 f"  batch-invariant {result.batch_invariance:.2%}  {result.rows_per_s:.0f} rows/s"
                 if result.batch_invariance is not None else "")
        # which provider measured its speed: `--artifact auto` ranks by speed only on the device that measured it
        measured_with = (getattr(runner, "providers", None) or ["TensorrtExecutionProvider"])[0]
        entry = {"name": name, "file": Path(path).name, "precision": precision, "runtime": runtime,
                 "sha256": file_sha256(path), "bytes": Path(path).stat().st_size, "parity": result.to_dict(),
                 "measured_with": measured_with, **(extra or {})}
        if entry.get("weights_file"):  # an IR's weights beside its graph
            entry["weights_sha256"] = file_sha256(Path(path).parent / entry["weights_file"])
            entry["bytes"] += (Path(path).parent / entry["weights_file"]).stat().st_size
        self.artifacts.append(entry)
        self.runners[name] = runner

    def write_graphs(self, tmp: Path) -> None:
        """The ONNX graphs (and OpenVINO IR) the options ask for, each checked as it is written."""
        cfg, onnx_cfg, check = self.cfg, self.onnx_cfg, self.check
        start = time.perf_counter()
        fp32 = onnx_export.export_onnx(self.model, onnx_cfg, tmp / "model.onnx", cfg.exporter)
        log.info("exported %s with the %s exporter in %.1fs", fp32.name, cfg.exporter, time.perf_counter() - start)
        check("fp32", "fp32", fp32, extra={"exporter": cfg.exporter})
        if cfg.optimize:
            fused = onnx_export.optimize_onnx(fp32, tmp / "model.opt.onnx", onnx_cfg, self.hf_config)
            if fused is not None:
                check("fp32-optimized", "fp32", tmp / "model.opt.onnx", extra={"fused_operators": fused})
        if cfg.int8:
            check("int8", "int8", quantize.quantize_int8(fp32, tmp / "model.int8.onnx"),
                  extra={"activation_scales": "dynamic"})
        if cfg.int8_static:
            calibration = self.calibration()
            check("int8-static", "int8", quantize.quantize_int8_static(fp32, tmp / "model.int8-static.onnx", calibration),
                  extra={"calibration_samples": sum(len(b["input_ids"]) for b in calibration),
                         "activation_scales": "static"})
        if cfg.openvino or cfg.openvino_int8:
            _openvino_artifacts(cfg, check, fp32, tmp, lambda: self.calibration(batch_size=1))
        if cfg.fp16 or cfg.trt:  # TensorRT 11 builds its fp16 engine from the fp16 graph (strong typing)
            # from the un-fused graph: a per-op fp32 block list cannot split ORT's fused Attention
            check("fp16", "fp16", quantize.convert_fp16(fp32, tmp / "model.fp16.onnx", onnx_cfg.family.fp16_keep_fp32))

    def calibration(self, batch_size: int = 16):
        return calibration_inputs(self.cm, self.tokenizer, self.max_len, self.cfg.calibration_samples,
                                  self.onnx_cfg.inputs, batch_size=batch_size)

    def manifest(self, tmp: Path, measured_on: dict | None) -> dict:
        """The export manifest (tokenizer files copied beside it): everything serving needs, so that it never opens
        the checkpoint manifest."""
        cm, tokenizer, onnx_cfg = self.cm, self.tokenizer, self.onnx_cfg
        files = {}
        for name in TOKENIZER_FILES:
            if (self.checkpoint / name).exists():
                shutil.copy(self.checkpoint / name, tmp / name)
                files[name] = file_sha256(tmp / name)
        return {
            "format": EXPORT_FORMAT, "task": cm["task"], "kind": cm["kind"], "kind_params": cm.get("kind_params", {}),
            "labels": list(self.labels),
            "text_field": cm.get("text_field"), "text_pair_field": cm.get("text_pair_field"),
            "label_field": cm.get("label_field"), "word_joiner": cm.get("word_joiner", " "),
            "max_chars": cm.get("max_chars"), "pad_token_id": tokenizer.pad_token_id or 0,
            "padding_side": tokenizer.padding_side,
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in onnx_cfg.inputs],
            "outputs": [{"name": onnx_cfg.output, "dtype": "float32", "shape": onnx_cfg.output_shape()}],
            "max_batch": self.max_batch, "max_seq_length": self.max_len, "opset": self.cfg.opset,
            "model_type": onnx_cfg.model_type,
            "artifacts": self.artifacts, "rejected": self.rejected, "tokenizer": "tokenizer.json", "files": files,
            "measured_on": measured_on,
            # a real example (the first parity text) that health checks send to the served model
            "canary": {k: v for k, v in self.canary.items() if k in ("text", "text_pair")},
            "checkpoint": str(self.checkpoint.resolve()),
            "checkpoint_manifest": cm, "created": now(), "versions": {**versions(), **_onnx_versions()},
        }

    def tensorrt(self, out: Path, manifest: dict) -> None:
        """TensorRT engines from the checked graphs, after the ONNX export is in place (a machine without a GPU still
        ends with complete ONNX artifacts, and a non-zero exit saying why)."""
        from tft.export import trt as trt_mod
        from tft.fsutil import cache_root

        cfg = self.cfg
        trt_version, gpu, capability = trt_mod.check_available()
        by_name = {a["name"]: a["file"] for a in self.artifacts}
        graphs = {"fp32": by_name["fp32"], **({"fp16": by_name["fp16"]} if "fp16" in by_name else {}),
                  # the Q/DQ graph of --int8-static: TensorRT's explicit quantization
                  **({"qdq": by_name["int8-static"]} if "int8-static" in by_name else {})}
        engines = [("tensorrt-fp16", "fp16", "model.plan")]
        if "qdq" in graphs:
            engines.append(("tensorrt-int8", "int8", "model.int8.plan"))
        for name, precision, file in engines:
            plan = trt_mod.plan_engine(trt_version=trt_version, precision=precision, inputs=self.onnx_cfg.inputs,
                                       max_batch=self.max_batch, max_len=self.max_len, opt_batch=self.opt_batch,
                                       opt_len=self.opt_seq_length or self.default_len, graphs=graphs, gpu=gpu,
                                       cache_root=cache_root(), version_compatible=cfg.trt_version_compatible,
                                       hardware_compatible=cfg.trt_hardware_compatible, capability=capability)
            engine = out / file
            info = trt_mod.build_engine(plan, out, engine)
            runner = trt_mod.TrtModel(engine, version_compatible=cfg.trt_version_compatible)
            try:
                self.check(name, precision, engine, runtime="tensorrt", runner=runner,
                           extra={**info, "gpu": gpu, "compute_capability": list(capability),
                                  "version_compatible": cfg.trt_version_compatible,
                                  "hardware_compatible": cfg.trt_hardware_compatible})
            except Exception:
                engine.unlink(missing_ok=True)
                raise
            finally:
                runner.close()
        manifest["artifacts"] = self.artifacts
        atomic_write_json(out / EXPORT_MANIFEST, manifest)
        mark_owned(out, "export")  # the engines are tft's too


def _openvino_artifacts(cfg: ExportConfig, check, fp32: Path, tmp: Path, calibration) -> None:
    """OpenVINO IR of the fp32 graph, checked in fp32 and (where native) in bf16, and NNCF's int8 IR."""
    from tft.cpus import bf16_native
    from tft.export import openvino

    ov = openvino.require()
    xml = openvino.write_ir(fp32, tmp / openvino.IR_FILE)
    ir = {"weights_file": openvino.weights_file(xml.name), "openvino": ov.__version__.split("-")[0]}
    if cfg.openvino:
        check("openvino-fp32", "fp32", xml, runtime="openvino", extra={**ir, "inference_precision": "f32"})
        if bf16_native():
            # offered, not asked for: failing its gate sets it aside (recorded under "rejected"), as a candidate
            check("openvino-bf16", "bf16", xml, runtime="openvino", extra={**ir, "inference_precision": "bf16"},
                  optional=True)
        else:
            log.info("openvino-bf16 not written: this CPU has neither AVX512_BF16 nor AMX (bf16 would be emulated, "
                     "slower than fp32)")
    if cfg.openvino_int8:
        int8, recipe = openvino.quantize_int8(xml, tmp / openvino.INT8_IR_FILE, calibration())
        # run in f32 around its int8 MatMuls: measured more accurate than bf16 there, and no slower (the module's doc)
        check("openvino-int8", "int8", int8, runtime="openvino",
              extra={**ir, "weights_file": openvino.weights_file(int8.name), "inference_precision": "f32", **recipe})
    if not cfg.openvino:  # the fp32 IR was only the int8 one's source
        for name in (xml.name, ir["weights_file"]):
            (tmp / name).unlink(missing_ok=True)


def _drop_unshared(path: Path, extra: dict | None, artifacts: list[dict]) -> None:
    """Remove a rejected artifact's files, unless an artifact that passed uses them (bf16 runs the fp32 IR)."""
    path = Path(path)
    kept = {name for a in artifacts for name in (a["file"], a.get("weights_file")) if name}
    for name in (path.name, (extra or {}).get("weights_file")):
        if name and name not in kept:
            (path.parent / name).unlink(missing_ok=True)


def _onnx_versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
