"""The layout of one served model: names, tensors and each step's `config.pbtxt`, from an export manifest.

    <name>_tokenizer   Python backend: TEXT (+ TEXT_PAIR) -> token ids (+ OFFSETS for NER)
    <name>_model       onnxruntime_onnx | tensorrt_plan | Python backend running ONNX Runtime
    <name>_postprocess Python backend: logits -> LABEL, SCORE | ENTITIES
    <name>             the ensemble wiring the three: text in, answers out

Every config.pbtxt is a `ModelConfig` protobuf printed with `text_format`, so its syntax is right by
construction (and tests parse each back). Everything here is rendered from a plain manifest dict: no
trained model, no files, so the tests of every step's config run in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tft.answers import shape_of
from tft.manifest import SERVE_MANIFEST, default_opt_shape, serving_fields, weights_fingerprint
from tft.predictions import max_chars_for, window_stride
from tft.serve.backends import BACKENDS, RepositoryError
from tft.serve.options import BuildOptions
from tft.tasks import kind_from


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


def _gpu_accelerator(config, name: str, parameters: dict) -> None:
    """One of the onnxruntime backend's gpu_execution_accelerator entries, with its parameters."""
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
    accelerator.name = name
    for key, value in parameters.items():
        accelerator.parameters[key] = value


def to_pbtxt(config) -> str:
    return text_format.MessageToString(config)


def parse_pbtxt(text: str):
    return text_format.Parse(text, mc.ModelConfig())


# per text, whether the tokenizer step cut it (past --max-chars, or tokens past max_seq_length); repositories built
# before it lack the output, and their clients mark only texts over max_chars
TRUNCATED = "TRUNCATED"


class Layout:
    """Names, tensor shapes and per-version settings of one served model, from the export manifest."""

    def __init__(self, manifest: dict, opts: BuildOptions, precision: str = "fp32", artifact: dict | None = None):
        opts = opts.for_export(manifest)  # the name and max batch the options leave to the export
        self.manifest, self.opts = manifest, opts
        self.precision = precision  # the served artifact's: what TensorRT inside ONNX Runtime runs it in
        # the served artifact's runtime and OpenVINO inference precision (the model step runs it as export checked it)
        self.runtime = (artifact or {}).get("runtime", BACKENDS[opts.backend].runtime)
        self.inference_precision = (artifact or {}).get("inference_precision", "f32")
        self.artifact = (artifact or {}).get("name")  # told to clients: verify compares the same artifact offline
        self.fields = serving_fields(manifest)  # never the checkpoint manifest: the export says what serving needs
        self.kind = spec = kind_from(manifest)
        self.shape = shape_of(spec)
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
        """The ensemble's outputs: what the kind's answer shape serves."""
        return [(name, dtype, list(dims)) for name, dtype, dims in self.shape.outputs]

    @property
    def windows(self) -> bool:
        """Per-token tasks whose model step reads windows: a text longer than the model reads goes in overlapping
        windows (the tokenizer lays them side by side in one row, the model step runs them, the postprocess merges
        them as `tft predict` does); elsewhere it is cut and marked truncated."""
        return self.token_task and BACKENDS[self.opts.backend].reads_windows and self.opts.windows

    # -- per-version settings (step.json beside each Python-backend model.py) --------------------------
    def tokenizer_settings(self) -> dict:
        max_len = self.manifest["max_seq_length"]
        return {"max_seq_length": max_len, "windows": self.windows, "window_stride": window_stride(max_len),
                "max_chars": max_chars_for(max_len, self.opts.max_chars or self.fields["max_chars"]),
                "token_task": self.token_task, "pair_task": self.pair_task,
                "word_joiner": self.fields["word_joiner"],
                # fixed-shape backends batch only equal shapes: bucket lengths for them; Python pads ragged batches
                "pad_to_multiple_of": 1 if BACKENDS[self.opts.backend].ragged else 16,
                "pad_token_id": self.manifest["pad_token_id"], "padding_side": self.padding_side}

    @property
    def model_file(self) -> str:
        """The model step's file in its version folder (an IR's weights sit beside it as model.bin)."""
        return BACKENDS[self.opts.backend].files_for(self.runtime)[0]

    def model_settings(self) -> dict:
        return {"model_file": self.model_file, "runtime": self.runtime,
                "inference_precision": self.inference_precision, "token_task": self.token_task,
                "intra_op_threads": self.opts.threads, "pad_token_id": self.manifest["pad_token_id"],
                "padding_side": self.padding_side, "windows": self.windows,
                "max_seq_length": self.manifest["max_seq_length"]}

    @property
    def padding_side(self) -> str:
        """Left for models that read their last token (XLNet); exports made before it was recorded pad right."""
        return self.manifest.get("padding_side", "right")

    def postprocess_settings(self) -> dict:
        # the answer shape names the postprocess function; the kind's parameters (a threshold) travel with it
        return {"labels": self.labels, "token_task": self.token_task, "answer": self.shape.name,
                "kind_params": self.kind.params(), "windows": self.windows,
                "max_seq_length": self.manifest["max_seq_length"]}

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
        _tensor(c.output, TRUNCATED, "TYPE_BOOL", [1])
        _instances(c, self.opts)
        return c

    def model_config(self):
        backend = BACKENDS[self.opts.backend]
        c = mc.ModelConfig(name=self.model)
        if backend.backend:
            c.backend = backend.backend
        else:
            c.platform, c.default_model_filename = backend.platform, backend.model_file
        if backend.thread_parameter and self.opts.threads:
            _parameters(c, {backend.thread_parameter: self.opts.threads})
        bf16 = [backend.bf16_parameter] if backend.bf16_parameter and self.inference_precision == "bf16" else []
        if backend.fixed_parameters or bf16:
            _parameters(c, dict([*backend.fixed_parameters, *bf16]))
        _batching(c, self.opts, wait=True)
        for name in self.inputs:
            _tensor(c.input, name, "TYPE_INT64", [-1], ragged=backend.ragged)
        _tensor(c.output, "logits", "TYPE_FP32", self.logits_dims)
        _instances(c, self.opts, gpu=self.opts.gpu)
        cuda, _ = self.tf32()
        if cuda:  # fp32 served in fp32: TF32 off in ONNX Runtime's CUDA provider
            _gpu_accelerator(c, "cuda", cuda)
        if self.opts.ort_tensorrt:  # per the onnxruntime_backend README: TensorRT inside ONNX Runtime
            _gpu_accelerator(c, "tensorrt", self.ort_tensorrt_parameters())
            self._warmup(c)
        return c

    def tf32(self) -> tuple[dict, dict]:
        """(cuda accelerator parameters, container environment) keeping an fp32 artifact in fp32 on the target."""
        from tft.serve.backends import tf32_off
        from tft.serve.targets import DEFAULT_TARGET, target_of

        release = target_of(self.opts.triton_image or DEFAULT_TARGET).tag.split("-", 1)[0]
        return tf32_off(BACKENDS[self.opts.backend], self.opts.gpu, self.opts.ort_tensorrt, self.precision, release)

    def ort_tensorrt_profile(self) -> dict[str, tuple[int, int]]:
        """The one shape range TensorRT builds for inside ONNX Runtime: batch 1..max, length 1..the export's longest.
        Without it each new batch x length builds another engine while a request waits (onnxruntime_backend
        src/onnxruntime.cc reads trt_profile_min/opt/max_shapes, r24.05 and newer)."""
        max_batch, max_len = self.opts.max_batch, int(self.manifest["max_seq_length"])
        return {"min": (1, 1), "opt": default_opt_shape(max_batch, max_len), "max": (max_batch, max_len)}

    def ort_tensorrt_parameters(self) -> dict[str, str]:
        cache = self.opts.ort_tensorrt_cache
        # the precision export checked the artifact in: an fp32 graph served at FP16 fails verify's fp32 rule
        params = {"precision_mode": "FP16" if self.precision == "fp16" else "FP32",
                  "max_workspace_size_bytes": str(self.opts.ort_tensorrt_workspace),
                  "trt_engine_cache_enable": "1", "trt_engine_cache_path": cache,
                  # tactic timings kept across restarts: a rebuilt engine (new pod, new shape range) builds faster
                  "trt_timing_cache_enable": "1", "trt_timing_cache_path": cache}
        for which, (batch, length) in self.ort_tensorrt_profile().items():
            params[f"trt_profile_{which}_shapes"] = ",".join(f"{name}:{batch}x{length}" for name in self.inputs)
        return params

    def _warmup(self, c) -> None:
        """A Triton model warm-up at the profile's optimum shape: the engine is built while the model loads (Triton
        reports it ready only after), so the first request, and the liveness canary, find it built."""
        batch, length = self.ort_tensorrt_profile()["opt"]
        warm = c.model_warmup.add(name="build the TensorRT engine", batch_size=batch, count=1)
        for name in self.inputs:
            warm.inputs[name].data_type = mc.TYPE_INT64
            warm.inputs[name].dims.append(length)
            warm.inputs[name].zero_data = True

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
        _tensor(c.output, TRUNCATED, "TYPE_BOOL", [1])

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
        tok_out[TRUNCATED] = TRUNCATED  # straight to the client: which texts were cut before the model read them
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
            "max_seq_length": self.manifest["max_seq_length"],
            "max_chars": self.tokenizer_settings()["max_chars"],
            # which checkpoint this model was exported from: verify refuses to compare it with another
            "weights_sha256": weights_fingerprint(self.manifest.get("checkpoint_manifest", {}).get("files")),
            **({"artifact": self.artifact} if self.artifact else {})},
            ensure_ascii=False),
            "tft_record": f"{record_version}/{SERVE_MANIFEST}"})
        return c


def with_versions(config, versions: list[int]):
    c = mc.ModelConfig()
    c.CopyFrom(config)
    c.version_policy.Clear()
    c.version_policy.specific.versions.extend(sorted(set(versions)))
    return c


def structure(config) -> tuple:
    """What a step's versions must share: backend and tensors (batching and instances may change)."""
    return (config.backend, config.platform, tuple(t.SerializeToString() for t in config.input),
            tuple(t.SerializeToString() for t in config.output))


def read_config(path: Path):
    try:
        return parse_pbtxt(path.read_text(encoding="utf-8"))
    except (OSError, text_format.ParseError) as e:
        raise RepositoryError(f"{path}: unreadable model config ({str(e).splitlines()[0]})") from None
