"""`tft verify`: what Triton answers, against what was trained and what was exported, on a whole dev split.

The same raw items go through three paths: the PyTorch checkpoint (`tft predict --checkpoint`), the
export's artifact that is served, on its own runtime (ONNX Runtime or OpenVINO: `tft predict --export`), and the
served ensemble over gRPC. The
report gives each path's dev metric, throughput and single-text latency, their pairwise agreement,
and every example where the served answer differs from PyTorch's.

Gates (any failure -> VerificationError, exit 1):
  * served vs the exported artifact (same model file, same code): 100% agreement, scores within 1e-4
    (fp32; 1e-3 fp16; 1e-2 int8, whose dynamic activation scales follow the batch the server forms, and bf16);
  * served vs PyTorch: the export's own thresholds for the artifact's precision: agreement at least
    99.9% (fp32), 99% (fp16) or the int8/bf16 parity minimum, and a dev-metric drop of at most 1 point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tft.answers import SERVED_SCORE_ATOL
from tft.errors import TftError
from tft.manifest import read_export_manifest, weights_fingerprint
from tft.serve.client import ClientOptions

log = logging.getLogger("tft")
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99}
# served vs the same file offline: identical answers always; scores within SERVED_SCORE_ATOL (tft/answers.py), the
# tolerance `--artifact auto` also serves by
SERVED_VS_EXPORT_ATOL = SERVED_SCORE_ATOL
MAX_METRIC_DROP = 0.01


class VerificationError(TftError):
    """Served answers differ from the trained model's beyond the thresholds."""


def agreement(shape, xs: list[dict], ys: list[dict]) -> float:
    return sum(shape.same(x, y) for x, y in zip(xs, ys)) / max(1, len(xs))


def timed(fn, items: list[dict], latency_samples: int) -> tuple[list, dict]:
    """Answer all items (throughput), then time single-item calls (latency)."""
    start = time.perf_counter()
    answers = fn(items)
    seconds = time.perf_counter() - start
    lat = []
    for item in items[:latency_samples]:
        t = time.perf_counter()
        fn([item])
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    stats = {"seconds": round(seconds, 3), "texts_per_s": round(len(items) / seconds, 1) if seconds else None,
             "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
             "latency_p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None}
    return answers, stats


def check_provenance(checkpoint, checkpoint_manifest: dict, what: str, settings: dict | None) -> None:
    """`what` (a served model's settings, an export) must come from this checkpoint: the weights and tokenizer it
    records. Either side written before tft recorded them is taken as it is."""
    theirs, mine = (settings or {}).get("weights_sha256"), weights_fingerprint(checkpoint_manifest.get("files"))
    if theirs and mine and theirs != mine:
        raise VerificationError(f"{what} was exported from another checkpoint than {checkpoint} (its weights and "
                                "tokenizer differ from the ones that checkpoint records); verify it against the "
                                "checkpoint it came from")


@dataclass
class VerifyOptions:
    """What `tft verify` compares: the checkpoint, the served model (`connection`: the gRPC options, once) and the
    export served, on a labelled split (the dev split by default)."""

    checkpoint: str | Path
    model: str
    connection: ClientOptions = field(default_factory=ClientOptions)
    export_dir: str | Path | None = None
    artifact: str | None = None  # the served artifact (default: the one the build told clients)
    data: str | Path | None = None
    data_dir: str | Path | None = None
    also: tuple[str, ...] = ()  # other artifacts of the export, compared offline only
    batch_size: int = 32
    concurrency: int = 8
    latency_samples: int = 30
    max_listed: int = 50
    device: str = "auto"  # ONNX Runtime's device for the offline export path


def verify(opts: VerifyOptions) -> dict:
    """Run the three paths on the dev split and compare; returns the report (raises on a failed gate)."""
    from tft.answers import shape_of
    from tft.train.predict import TorchModel, answer_items

    tm = TorchModel(opts.checkpoint)
    shape = shape_of(tm.settings.kind)
    source, examples, items = _verification_set(tm, opts)
    served, info = _served_path(tm, opts)
    artifact = opts.artifact or (info.tft or {}).get("artifact")  # the served one, compared offline on its runtime
    # long per-token texts: read in windows offline where the served build reads them so (older builds: cut)
    windows = bool((info.tft or {}).get("windows", False))
    tm.settings = dataclasses.replace(tm.settings, windows=windows)
    paths = {"pytorch": lambda batch: answer_items(tm, batch, 64)}
    artifact, precision, offline = _offline_paths(opts, artifact, paths, windows)
    paths["served"] = served
    report = {"format": "tft.verify/1", "task": tm.manifest["task"], "kind": tm.manifest["kind"],
              "checkpoint": str(Path(opts.checkpoint).resolve()),
              "export": str(Path(opts.export_dir).resolve()) if opts.export_dir else None, "artifact": artifact,
              "precision": precision, "offline": offline, "served": {"url": opts.connection.url, "model": opts.model},
              "data": str(source), "examples": len(items), "runs": {}, "agreement": {}}
    answers = {}
    gold = shape.gold(examples, tm.labels, tm.settings.word_joiner)
    for name, fn in paths.items():
        log.info("verify: %s on %d examples", name, len(items))
        result, stats = timed(fn, items, opts.latency_samples)
        answers[name] = [shape.strip(r) for r in result]
        report["runs"][name] = {"metrics": shape.metric(answers[name], gold, tm.labels), **stats}
    names = list(answers)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            report["agreement"][f"{a}~{b}"] = agreement(shape, answers[a], answers[b])
    disagreements = [{"id": item.get("id"), "text": item["text"], **({"text_pair": item["text_pair"]}
                      if "text_pair" in item else {}), "pytorch": p, "served": s}
                     for item, p, s in zip(items, answers["pytorch"], answers["served"]) if not shape.same(p, s)]
    report.update(disagreements=disagreements[:opts.max_listed], disagreement_count=len(disagreements),
                  main_metric=tm.manifest["main_metric"])
    report["gates"] = gates(report, answers, precision, opts.export_dir, shape)
    report["passed"] = all(g["passed"] for g in report["gates"])
    return report


def _verification_set(tm, opts: VerifyOptions) -> tuple:
    """(the file, its labelled examples, their items): --data, or the checkpoint task's dev split."""
    from tft.data.dataset import load_dataset
    from tft.data.readers import READERS
    from tft.inference import items_from_examples

    if opts.data:
        source = Path(opts.data)
        examples = READERS[tm.task.reader](source, tm.task, require_label=True).examples
    else:
        ds = load_dataset(tm.task, opts.data_dir or tm.manifest.get("data_dir"), ("dev",), labels=tm.labels)
        source, examples = ds["dev"].path, ds["dev"].examples
    if not examples:
        raise TftError(f"{source}: no labelled examples to verify with")
    return source, examples, items_from_examples(examples, tm.task)


def _served_path(tm, opts: VerifyOptions):
    """The served model as a path (items -> answers over gRPC), once it is proven to serve this checkpoint."""
    from tft.serve.client import Client

    url, model = opts.connection.url, opts.model
    client = Client(options=opts.connection)
    info = client.info(model)
    if info.tft and info.tft.get("task") != tm.manifest["task"]:
        raise VerificationError(f"{model} at {url} serves task {info.tft.get('task')!r}, the checkpoint is "
                                f"{tm.manifest['task']!r}")
    check_provenance(opts.checkpoint, tm.manifest, f"{model} at {url}", info.tft)
    if opts.export_dir is not None:
        check_provenance(opts.checkpoint, tm.manifest, str(opts.export_dir), {"weights_sha256": weights_fingerprint(
            read_export_manifest(opts.export_dir)["checkpoint_manifest"].get("files"))})

    def served(batch):
        answers, stats = client.infer(model, batch, batch_size=opts.batch_size, concurrency=opts.concurrency)
        if stats.unanswered:
            raise VerificationError(f"{stats.unanswered} inputs unanswered by {url}: {stats.first_error}")
        if stats.failed:
            raise VerificationError(f"{stats.failed} inputs refused by {url}: {stats.first_error}")
        return answers

    return served, info


def _offline_paths(opts: VerifyOptions, artifact: str | None, paths: dict, windows: bool) -> tuple:
    """Add the served artifact on its own runtime (and --also artifacts) to `paths`; -> (artifact, precision, the
    offline runtime or None)."""
    from tft.export.runtime import ExportPredictor

    export_dir = opts.export_dir
    engine = _engine_artifact(export_dir, artifact) if export_dir else None
    if engine:  # a TensorRT engine served by Triton's tensorrt backend: no ONNX Runtime twin to compare offline
        return engine["name"], engine["precision"], None
    if not export_dir:
        return artifact, "fp32", None
    ort = ExportPredictor(export_dir, artifact=artifact, device=opts.device)
    ort.settings = dataclasses.replace(ort.settings, windows=windows)
    offline = ort.artifact.get("runtime", "onnxruntime")  # the same file on its runtime: onnxruntime or openvino
    paths[offline] = lambda batch: ort.answer_items(batch, 64)
    for name in opts.also:  # other artifacts of the export, offline only (say int8 next to the served fp32)
        if name != ort.artifact["name"]:
            extra = ExportPredictor(export_dir, artifact=name, device=opts.device)
            extra.settings = dataclasses.replace(extra.settings, windows=windows)
            paths[f"{extra.artifact.get('runtime', 'onnxruntime')}-{name}"] = \
                lambda batch, p=extra: p.answer_items(batch, 64)
    return ort.artifact["name"], ort.artifact["precision"], offline


def gates(report: dict, answers: dict, precision: str, export_dir, shape) -> list[dict]:
    out = []
    main = report["main_metric"]
    runs = report["runs"]
    offline = report.get("offline") or "onnxruntime"
    if offline in answers:
        agree = report["agreement"][f"{offline}~served"]
        diffs = [shape.score_diff(a, b) for a, b in zip(answers[offline], answers["served"])]
        max_diff = max((d for d in diffs if d is not None), default=0.0)
        out.append({"gate": "served equals the exported artifact", "agreement": agree,
                    "max_score_diff": max_diff, "threshold": {"agreement": 1.0, "atol": SERVED_VS_EXPORT_ATOL[precision]},
                    "passed": agree == 1.0 and max_diff <= SERVED_VS_EXPORT_ATOL[precision]})
    minimum = MIN_AGREEMENT.get(precision)
    if minimum is None:  # int8, bf16: the export's own gate, as recorded in its parity result
        minimum = _export_min_agreement(export_dir, report.get("artifact")) or 0.99
    agree = report["agreement"]["pytorch~served"]
    drop = runs["pytorch"]["metrics"].get(main, 0.0) - runs["served"]["metrics"].get(main, 0.0)
    out.append({"gate": f"served agrees with PyTorch ({precision})", "agreement": agree,
                "metric_drop": drop, "threshold": {"agreement": minimum, "max_metric_drop": MAX_METRIC_DROP},
                "passed": agree >= minimum and drop <= MAX_METRIC_DROP})
    return out


def _artifact_entry(export_dir, artifact) -> dict | None:
    """The export manifest's entry for `artifact`, or None."""
    from tft.manifest import read_export_manifest

    if not export_dir or not artifact:
        return None
    return next((a for a in read_export_manifest(export_dir)["artifacts"] if a["name"] == artifact), None)


def _engine_artifact(export_dir, artifact) -> dict | None:
    """The artifact, when a native backend serves it as an engine (no offline runtime runs it here)."""
    from tft.serve.backends import native_backend_of

    art = _artifact_entry(export_dir, artifact)
    backend = native_backend_of(art.get("runtime", "onnxruntime")) if art else None
    return art if backend is not None and backend.engine else None


def _export_min_agreement(export_dir, artifact) -> float | None:
    art = _artifact_entry(export_dir, artifact)
    return art.get("parity", {}).get("thresholds", {}).get("min_agreement") if art else None


def markdown(report: dict) -> str:
    main = report["main_metric"]
    lines = [f"# Verification: {report['task']} ({report['kind']})", "",
             f"- checkpoint: `{report['checkpoint']}`",
             f"- export: `{report['export']}` (served artifact: {report['artifact']}, {report['precision']})",
             f"- served: `{report['served']['model']}` at `{report['served']['url']}`",
             f"- data: `{report['data']}` ({report['examples']} examples)",
             f"- result: **{'PASSED' if report['passed'] else 'FAILED'}**", "",
             f"| path | {main} | texts/s | latency p50 ms | latency p95 ms |", "|---|---|---|---|---|"]
    for name, run in report["runs"].items():
        lines.append(f"| {name} | {run['metrics'].get(main, float('nan')):.4f} | {run['texts_per_s']} | "
                     f"{run['latency_p50_ms']} | {run['latency_p95_ms']} |")
    lines += ["", "| agreement | fraction of identical answers |", "|---|---|"]
    lines += [f"| {k.replace('~', ' vs ')} | {v:.4f} |" for k, v in report["agreement"].items()]
    lines += ["", "| gate | passed | measured | threshold |", "|---|---|---|---|"]
    for g in report["gates"]:
        measured = {k: round(v, 6) for k, v in g.items() if k not in ("gate", "passed", "threshold")}
        lines.append(f"| {g['gate']} | {'yes' if g['passed'] else 'NO'} | {measured} | {g['threshold']} |")
    lines += ["", f"## Served answers that differ from PyTorch ({report['disagreement_count']})", ""]
    if not report["disagreements"]:
        lines.append("None.")
    for d in report["disagreements"]:
        lines.append(f"- `{d['id']}` {json.dumps(d['text'], ensure_ascii=False)[:120]}: PyTorch "
                     f"{json.dumps(d['pytorch'], ensure_ascii=False)[:200]}, served "
                     f"{json.dumps(d['served'], ensure_ascii=False)[:200]}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    from tft.fsutil import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", markdown(report))
    return out_dir / "report.json", out_dir / "report.md"
