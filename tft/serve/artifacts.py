"""Which export artifact the model step serves: the one asked for, the backend's default, or `--artifact
auto` (the fastest that passed its gate and answers the same in any batch); and whether a TensorRT engine
loads on the serving TensorRT. Pure functions of the export manifest and the options."""

from __future__ import annotations

import re

from tft.answers import SERVED_SCORE_ATOL
from tft.errors import TftError
from tft.manifest import AMPERE_PLUS_MIN_CAPABILITY, default_artifact
from tft.serve.backends import BACKENDS, RepositoryError
from tft.serve.options import BuildOptions


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
AUTO_PRECISIONS = {"cpu": ("fp32", "int8"), "gpu": ("fp32", "fp16")}  # what each device runs fast


def target_exclusions(manifest: dict, backend: str, target) -> dict[str, str]:
    """Artifacts the target cannot be trusted to run as they were checked: the graph ONNX Runtime fused (its fused
    operators are its own version's) where the target's ONNX Runtime is another one."""
    if target is None:
        return {}
    exported_with = manifest.get("versions", {}).get("onnxruntime")
    if backend == "onnxruntime":
        serving = target.onnxruntime
    else:  # the Python backend: the container's pip installs the newest ONNX Runtime for its Python
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


def choose_artifact(manifest: dict, runtime: str, device: str, exclude: dict | None = None) -> tuple[dict, list[dict]]:
    """`--artifact auto`: the fastest artifact (rows/s measured by export's serving-batch parity) that this
    backend's runtime serves on this device, whose gate passed and whose answers are batch-invariant.
    Returns (the choice, every artifact considered with its figures and why it was or was not taken)."""
    considered, best = [], None
    exclude = exclude or {}
    for art in manifest["artifacts"]:
        parity = art.get("parity", {})
        entry = {"name": art["name"], "rows_per_s": parity.get("rows_per_s"), "batch_invariance":
                 parity.get("batch_invariance"), "latency_ms_p50": parity.get("latency_ms_p50")}
        if art["name"] in exclude:
            entry["skipped"] = exclude[art["name"]]
        elif art.get("runtime", "onnxruntime") != runtime:
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
        elif best is None or entry["rows_per_s"] > best[1]["rows_per_s"]:
            best = (art, entry)
        considered.append(entry)
    if best is not None and device == "gpu" and not measured_on_gpu(best[0]):
        # speeds measured on the export host's CPU say nothing of the serving GPU: take the precision the GPU runs
        # fastest that passed (fp16), else the plain graph
        candidates = [(a, e) for a, e in zip(manifest["artifacts"], considered) if "skipped" not in e]
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


def describe_choice(entry: dict) -> str:
    """One line of `--artifact auto`'s record: an artifact, its measured speed, why it was skipped."""
    speed = f"{entry['rows_per_s']:.0f} rows/s" if entry.get("rows_per_s") else "speed not measured"
    return f"{entry['name']} ({speed}){': ' + entry['skipped'] if entry.get('skipped') else ''}"



def parse_capability(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise RepositoryError(f"--gpu-capability {text!r}: give the serving GPU's compute capability as MAJOR.MINOR, "
                              "such as 8.0 (A100), 8.6 (A10), 8.9 (L4) or 9.0 (H100)")
    return int(match.group(1)), int(match.group(2))


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
    exclude = {**target_exclusions(manifest, opts.backend, target),
               **(tensorrt_partitioned(manifest) if opts.ort_tensorrt else {})}
    if opts.artifact == "auto":
        try:
            chosen, considered = choose_artifact(manifest, backend.runtime, "gpu" if opts.gpu else "cpu", exclude)
        except TftError as e:
            raise RepositoryError(str(e)) from None
        return {**chosen, "choice": considered}
    if opts.artifact in exclude:
        raise RepositoryError(f"--artifact {opts.artifact}: {exclude[opts.artifact].split(': the plain')[0]}; serve "
                              "fp32 (the plain graph) on that target")
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
