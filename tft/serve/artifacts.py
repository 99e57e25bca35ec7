"""Which export artifact the model step serves: the one asked for, the backend's default, or `--artifact
auto` (the fastest that passed its gate and answers the same in any batch); and whether a TensorRT engine
loads on the serving TensorRT. Pure functions of the export manifest and the options."""

from __future__ import annotations

import logging
import re

from tft.answers import SERVED_SCORE_ATOL
from tft.errors import TftError
from tft.manifest import AMPERE_PLUS_MIN_CAPABILITY, default_artifact
from tft.serve.backends import BACKENDS, RepositoryError
from tft.serve.options import BuildOptions, parse_capability

log = logging.getLogger("tft")


def engine_loads_on(built: str, serving: str, version_compatible: bool) -> bool:
    """An engine loads on the TensorRT that built it, to the build number where both give one (TensorRT itself
    checks the full version: 10.5.0.18 and 10.5.0.17 are different releases); a version-compatible one also on
    later releases of the same major, and a TensorRT 10 one on TensorRT 11 (TensorRT 11's support matrix)."""
    def parts(version):
        return tuple(int(p) for p in re.findall(r"\d+", str(version))[:4])

    b, s = parts(built), parts(serving)
    if version_compatible:
        return s[:3] >= b[:3] and (b[:1] == s[:1] or (b[:1] == (10,) and s[:1] == (11,)))
    digits = min(len(b), len(s), 4)
    return b[:3] == s[:3] and b[:digits] == s[:digits]


# `--artifact auto` serves only artifacts whose answers never changed with their batch on the dev rows export
# measured: served answers must be reproducible offline (verify's "served equals the exported artifact" gate)
AUTO_MIN_BATCH_INVARIANCE = 1.0
AUTO_PRECISIONS = {"cpu": ("fp32", "int8", "bf16"), "gpu": ("fp32", "fp16")}  # what each device runs fast


def target_exclusions(manifest: dict, backend, target) -> dict[str, str]:
    """Artifacts the target cannot be trusted to run as they were checked: the graph ONNX Runtime fused (its fused
    operators are its own version's) where the ONNX Runtime that serves it there is another one."""
    if target is None or not backend.onnxruntime_from:  # a backend that runs no ONNX Runtime
        return {}
    exported_with = manifest.get("versions", {}).get("onnxruntime")
    if backend.onnxruntime_from == "image":
        serving = target.onnxruntime
    else:  # ONNX Runtime from pip, beside the Python backend's stub: the newest for the container's Python
        import platform

        if target.python_minor == ".".join(platform.python_version().split(".")[:2]):
            return {}
        serving = f"the newest for Python {target.python_minor}"
    from tft.serve.targets import same_minor

    if same_minor(exported_with, serving):
        return {}
    return {"fp32-optimized": f"fused by ONNX Runtime {exported_with or '(unrecorded)'}; {target.tag} runs {serving}: "
                              "the plain graph is served"}


def activation_scales(artifact: dict) -> str:
    """'dynamic' where a quantized graph computes activation scales per batch (export records it; exports written
    before it did name their dynamic int8 graph `int8`), else 'static'."""
    return artifact.get("activation_scales") or ("dynamic" if artifact["name"] == "int8" else "static")


def measured_on_gpu(artifact: dict) -> bool:
    """Whether export measured this artifact's speed on a GPU provider (exports before it recorded: taken as the
    serving device's, as they were)."""
    provider = artifact.get("measured_with")
    return provider is None or provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")


# the simpler graph wins unless another is faster by more than both figures' spread: plain before fused, ONNX Runtime
# before OpenVINO, full precision before reduced
SIMPLICITY = ("fp32", "fp32-optimized", "openvino-fp32", "openvino-bf16", "int8-static", "openvino-int8", "int8")


def _simplicity(name: str) -> int:
    return SIMPLICITY.index(name) if name in SIMPLICITY else len(SIMPLICITY)


def speed_of(artifact: dict) -> tuple[float | None, float]:
    """(rows/s, relative spread) `auto` ranks by: export's side-by-side benchmark (`speed`), else (exports before it)
    the parity gate's single pass, whose spread is unknown (taken as none)."""
    speed = artifact.get("speed")
    if isinstance(speed, dict) and speed.get("score"):
        return float(speed["score"]), float(speed.get("spread") or 0.0)
    return artifact.get("parity", {}).get("rows_per_s"), 0.0


def choose_artifact(manifest: dict, runtime, device: str, exclude: dict | None = None) -> tuple[dict, list[dict]]:
    """`--artifact auto`: among the artifacts that a runtime of this backend (`runtime`: one or a tuple) serves on
    this device, whose gate passed and whose answers are batch-invariant, the fastest by export's benchmark, if it
    beats the simplest of them by more than the two figures' spread; else that simpler one.
    Returns (the choice, every artifact considered with its figures and why it was or was not taken)."""
    runtimes = (runtime,) if isinstance(runtime, str) else tuple(runtime)
    considered, candidates = [], []
    exclude = exclude or {}
    for art in manifest["artifacts"]:
        parity = art.get("parity", {})
        rows_per_s, spread = speed_of(art)
        entry = {"name": art["name"], "rows_per_s": rows_per_s, "spread": spread, "batch_invariance":
                 parity.get("batch_invariance"), "latency_ms_p50": parity.get("latency_ms_p50")}
        if art["name"] in exclude:
            entry["skipped"] = exclude[art["name"]]
        elif art.get("runtime", "onnxruntime") not in runtimes:
            entry["skipped"] = f"runs on {art.get('runtime')}"
        elif art["precision"] not in AUTO_PRECISIONS[device]:
            entry["skipped"] = f"{art['precision']} is not fast on the {device}"
        elif not parity.get("passed", False):
            entry["skipped"] = "its parity gate did not pass"
        elif entry["rows_per_s"] is None:
            entry["skipped"] = "no speed measured (exported before tft measured it)"
        elif entry["batch_invariance"] is not None and entry["batch_invariance"] < AUTO_MIN_BATCH_INVARIANCE:
            entry["skipped"] = f"answers change with the batch ({1 - entry['batch_invariance']:.2%} of dev)"
        elif (parity.get("score_drift") or 0.0) > SERVED_SCORE_ATOL.get(art["precision"], float("inf")):
            # tft verify would reject it: the same file's scores, served in other batches, differ by more
            entry["skipped"] = (f"scores move with the batch by up to {parity['score_drift']:.3g} (verify allows "
                                f"{SERVED_SCORE_ATOL[art['precision']]:g})")
        elif activation_scales(art) == "dynamic":
            # measured batch-invariant on export's sampled batches, yet the server forms others: a tiny ConvBERT's
            # int8 passed export's drift check and was served 0.016 from its own file (verify allows 0.01)
            entry["skipped"] = ("dynamic int8 computes its activation scales per batch, so a row's scores follow its "
                                "neighbours; serve it with --artifact int8 where verify's int8 rule is enough")
        else:
            candidates.append((art, entry))
        considered.append(entry)
    best = _fastest_by_margin(candidates)
    if best is not None and device == "gpu" and not measured_on_gpu(best[0]):
        # speeds measured on the export host's CPU say nothing of the serving GPU: take the precision the GPU runs
        # fastest that passed (fp16), else the plain graph
        best = next(((a, e) for a, e in candidates if a["precision"] == "fp16"), None) or \
            next(((a, e) for a, e in candidates if a["name"] == "fp32"), best)
        best[1]["ranked"] = "by precision: its speed was measured on the CPU, not on the serving GPU"
    if best is None:
        fallback = default_artifact(manifest)
        for entry in considered:
            entry["chosen"] = entry["name"] == fallback["name"]
        return fallback, considered
    for entry in considered:
        entry["chosen"] = entry is best[1]
    return best[0], considered


def _fastest_by_margin(candidates: list[tuple[dict, dict]]):
    """The fastest candidate, unless the simplest one is within the two figures' spread of it."""
    if not candidates:
        return None
    fastest = max(candidates, key=lambda c: c[1]["rows_per_s"])
    simplest = min(candidates, key=lambda c: _simplicity(c[0]["name"]))
    if fastest is simplest:
        return fastest
    margin = fastest[1]["spread"] + simplest[1]["spread"]
    if fastest[1]["rows_per_s"] <= simplest[1]["rows_per_s"] * (1 + margin):
        simplest[1]["ranked"] = (f"{fastest[0]['name']} measured {fastest[1]['rows_per_s']:.0f} rows/s, within the "
                                 f"spread ({margin:.0%}) of this simpler graph's {simplest[1]['rows_per_s']:.0f}")
        return simplest
    return fastest


def describe_choice(entry: dict) -> str:
    """One line of `--artifact auto`'s record: an artifact, its measured speed, why it was skipped."""
    speed = f"{entry['rows_per_s']:.0f} rows/s" if entry.get("rows_per_s") else "speed not measured"
    return f"{entry['name']} ({speed}){': ' + entry['skipped'] if entry.get('skipped') else ''}"



def engine_runs_on(built, hardware_compatible: bool, target: tuple[int, int]) -> bool:
    """Whether an engine built on a GPU of compute capability `built` runs on one of `target`: by default only on
    the device type that built it (compared here by compute capability), or on any Ampere or newer GPU for an
    AMPERE_PLUS engine (TensorRT's Engine Compatibility guide, "Hardware Compatibility")."""
    if hardware_compatible:
        return tuple(target) >= AMPERE_PLUS_MIN_CAPABILITY
    return built is not None and tuple(built) == tuple(target)


def tensorrt_partitioned(manifest: dict) -> dict[str, str]:
    """Artifacts TensorRT inside ONNX Runtime would take only in pieces, with the rest on CUDA: ONNX Runtime refuses
    explicit shape profiles on a partitioned graph (the fused graph's contrib operators, dynamic int8's
    DynamicQuantizeLinear and MatMulInteger), so --ort-tensorrt serves the plain graphs only."""
    out = {}
    for art in manifest.get("artifacts", ()):
        if art.get("fused_operators") or art["name"] == "fp32-optimized":
            out[art["name"]] = "ONNX Runtime's fused operators are its own: TensorRT would take the graph in pieces"
        elif art["precision"] == "int8" and activation_scales(art) == "dynamic":
            out[art["name"]] = "dynamic int8's DynamicQuantizeLinear/MatMulInteger: TensorRT would take it in pieces"
    return out


def pick_artifact(manifest: dict, opts: BuildOptions, target=None) -> dict:
    backend = BACKENDS[opts.backend]
    if backend.engine:
        wanted = opts.artifact if opts.artifact not in (None, "auto") else backend.default_artifact
        for art in manifest["artifacts"]:
            if art["name"] == wanted and art.get("runtime") == backend.runtime:
                built = art.get("tensorrt_version")
                if opts.tensorrt_version and built and not engine_loads_on(built, opts.tensorrt_version,
                                                                           bool(art.get("version_compatible"))):
                    raise RepositoryError(
                        f"{art['file']} was built by TensorRT {built}"
                        f"{' (version-compatible)' if art.get('version_compatible') else ''}; the server's TensorRT "
                        f"{opts.tensorrt_version} cannot load it: export it again with that TensorRT (inside that "
                        "container), or with --trt-version-compatible")
                if opts.gpu_capability:
                    target, built = parse_capability(opts.gpu_capability), art.get("compute_capability")
                    if not engine_runs_on(built, bool(art.get("hardware_compatible")), target):
                        shown = ".".join(map(str, built)) if built else "an unrecorded capability"
                        raise RepositoryError(
                            f"{art['file']} was built on a {art.get('gpu') or 'GPU'} (compute capability {shown}); a "
                            f"GPU of compute capability {target[0]}.{target[1]} cannot run it"
                            + (": AMPERE_PLUS engines need 8.0 or newer" if art.get("hardware_compatible") else
                               ": export it on such a GPU, or with --trt-hardware-compatible (Ampere and newer)"))
                return art
        raise RepositoryError("the export has no TensorRT engine; run `tft export --trt` on a machine with "
                              "an NVIDIA GPU and TensorRT, or use --backend onnxruntime|python")
    exclude = {**target_exclusions(manifest, backend, target),
               **(tensorrt_partitioned(manifest) if opts.ort_tensorrt else {}),
               **(native_openvino_exclusions(manifest, target) if backend.image_openvino else {})}
    if opts.artifact == "auto":
        note = other_cpu(manifest) if not opts.gpu else None
        if note:
            log.warning("--artifact auto: %s", note)
        try:
            chosen, considered = choose_artifact(manifest, backend.runtimes, "gpu" if opts.gpu else "cpu", exclude)
        except TftError as e:
            raise RepositoryError(str(e)) from None
        if chosen.get("runtime", "onnxruntime") not in backend.runtimes:
            raise RepositoryError(f"--artifact auto: no artifact of the export runs on the {opts.backend} backend "
                                  f"({'; '.join(describe_choice(e) for e in considered)})")
        return {**chosen, "choice": considered}
    wanted = opts.artifact or backend.default_artifact
    # the option that named it: --artifact, or the backend's default artifact
    asked = f"--artifact {wanted}" if opts.artifact else f"--backend {opts.backend} (its default artifact, {wanted})"
    if wanted in exclude:
        raise RepositoryError(f"{asked}: {exclude[wanted].split(': the plain')[0]}"
                              + ("; serve fp32 (the plain graph) on that target" if "fused" in exclude[wanted] else ""))
    if wanted:
        for art in manifest["artifacts"]:
            if art["name"] == wanted and art.get("runtime", "onnxruntime") in backend.runtimes:
                return art
        names = ", ".join(a["name"] for a in manifest["artifacts"]
                          if a.get("runtime", "onnxruntime") in backend.runtimes)
        hint = f" (export with {backend.export_flag})" if backend.export_flag else ""
        named = f"--artifact {wanted!r}" if opts.artifact else asked
        raise RepositoryError(f"{named}: the export has {names or 'nothing'} for the {opts.backend} backend{hint}")
    try:
        return default_artifact(manifest)
    except TftError as e:
        raise RepositoryError(str(e)) from None


def other_cpu(manifest: dict) -> str | None:
    """Why export's speeds may not rank artifacts for this CPU: they were measured on another (model or speed flags),
    or None. An engine fastest with AMX may be slowest without it."""
    from tft.cpus import cpu_record, same_cpu

    measured, here = manifest.get("measured_on"), cpu_record()
    if not measured or same_cpu(measured, here):
        return None
    return (f"speeds were measured on {measured.get('model')} ({' '.join(measured.get('flags', ())) or 'no speed flags'}); "
            f"this CPU is {here['model']} ({' '.join(here['flags']) or 'no speed flags'}): the ranking may not hold "
            "here; export on the serving CPU to rank for it")


def native_openvino_exclusions(manifest: dict, target) -> dict[str, str]:
    """OpenVINO artifacts Triton's openvino backend cannot run as export checked them: an IR newer than the image's
    OpenVINO reads, or one checked in f32 where OpenVINO would run it in bf16 (the backend's HINT_BF16 takes only YES,
    and OpenVINO's CPU plugin defaults to bf16 where the CPU has it natively, as the one that measured did)."""
    from tft.cpus import CPU_BF16_FLAGS
    from tft.serve.targets import reads_ir_of

    out = {}
    measured = manifest.get("measured_on") or {}
    bf16_here = measured.get("flags") is None or any(f in measured.get("flags", ()) for f in CPU_BF16_FLAGS)
    for art in manifest.get("artifacts", ()):
        if art.get("runtime") != BACKENDS["openvino"].runtime:  # the IR this backend reads
            continue
        if target is not None and not reads_ir_of(target.openvino, art.get("openvino")):
            out[art["name"]] = (f"written by OpenVINO {art.get('openvino')}; {target.tag}'s openvino backend runs "
                                f"OpenVINO {target.openvino or '(none listed)'}, which cannot read a newer IR: choose "
                                "an image whose OpenVINO is as new (--triton-image), or --backend python")
        elif art.get("inference_precision", "f32") != "bf16" and bf16_here:
            out[art["name"]] = ("checked in f32, and Triton's openvino backend cannot ask OpenVINO for f32 (its "
                                "HINT_BF16 takes only YES): on a CPU with native bf16, like the one that exported "
                                "it, it would run in bf16; serve openvino-bf16, or this artifact with --backend python")
    return out
