"""Triton Python-backend model: the exported artifact run with its own runtime (`--backend python`): an ONNX graph
with ONNX Runtime, an OpenVINO IR with OpenVINO in the inference precision export checked it in (step.json says which).

For Triton builds without the onnxruntime or openvino backends, such as the embedded server. Token inputs are
declared `allow_ragged_batch`, so the dynamic batcher hands over requests of different lengths
together; they are padded here to the longest, run as one batch, and split back per request.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def available_cpus(root="/sys/fs/cgroup"):
    """tft/cpus.py's, copied: this file runs inside Triton without tft. The affinity mask capped by the cgroup CPU
    quota (a pod's resources.limits.cpu)."""
    import math
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = None
    try:
        limit, period = open(os.path.join(root, "cpu.max")).read().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int(open(os.path.join(root, "cpu", "cpu.cfs_quota_us")).read())
            period = int(open(os.path.join(root, "cpu", "cpu.cfs_period_us")).read())
            quota = limit / period if limit > 0 and period > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((here / "step.json").read_text(encoding="utf-8"))  # this version's own
        # the build's --threads, else the CPUs the container is given (its cgroup quota), not the node's cores
        threads = int(settings.get("intra_op_threads") or 0) or available_cpus()
        model_file = str(here / settings["model_file"])  # step.json and this file are written together by each build
        self.runtime = settings.get("runtime", "onnxruntime")
        if self.runtime == "openvino":
            import openvino as ov

            core = ov.Core()
            # set always: OpenVINO's CPU default is bf16 where the CPU has it, and an f32 artifact was checked in f32
            compiled = core.compile_model(core.read_model(model_file), "CPU", {
                "INFERENCE_PRECISION_HINT": settings.get("inference_precision", "f32"),
                "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": threads})
            self.request = compiled.create_infer_request()
            self.input_names = [i.get_any_name() for i in compiled.inputs]
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = config["output"][0]["name"]
        self.token_task = bool(settings["token_task"])
        self.pad_id = int(settings.get("pad_token_id", 0))
        # requests padded on the left (XLNet) stay right-aligned in the merged batch, as the tokenizer step made them
        self.left = settings.get("padding_side", "right") == "left"
        # a per-token text read in windows: its row holds them side by side, each in a slot of max_seq_length
        self.slot = int(settings["max_seq_length"]) if settings.get("windows") else 0

    def _windows_as_rows(self, arrays):
        """A request whose rows hold windows -> one row per window (the slots; empty ones left out), and how to put
        the logits back: (arrays, None) for a plain request."""
        width = arrays["input_ids"].shape[1]
        if not self.slot or width <= self.slot:
            return arrays, None
        n, slots = arrays["input_ids"].shape[0], width // self.slot
        flat = {name: a.reshape(n * slots, self.slot) for name, a in arrays.items()}
        used = np.flatnonzero(flat["attention_mask"].any(axis=1))
        return {name: a[used] for name, a in flat.items()}, (n, slots, used)

    def execute(self, requests):
        per_request, layouts = [], []
        for request in requests:
            arrays, layout = self._windows_as_rows({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                                                    for name in self.input_names})
            per_request.append(arrays)
            layouts.append(layout)
        rows = sum(r["input_ids"].shape[0] for r in per_request)
        width = max(r["input_ids"].shape[1] for r in per_request)
        feed = {}
        for name in self.input_names:
            fill = self.pad_id if name == "input_ids" else 0
            batch = np.full((rows, width), fill, dtype=np.int64)
            row = 0
            for r in per_request:
                a = r[name]
                first = width - a.shape[1] if self.left else 0
                batch[row:row + a.shape[0], first:first + a.shape[1]] = a
                row += a.shape[0]
            feed[name] = batch
        try:
            if self.runtime == "openvino":
                logits = np.array(self.request.infer(feed)[0], dtype=np.float32)
            else:
                logits = self.session.run(None, feed)[0].astype(np.float32, copy=False)
        except Exception as e:  # a runtime failure fails this batch's requests, not the server
            error = pb_utils.TritonError(f"{self.runtime}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, row = [], 0
        for r, layout in zip(per_request, layouts):
            n, length = r["input_ids"].shape
            first = width - length if self.left else 0
            out = logits[row:row + n, first:first + length] if self.token_task else logits[row:row + n]
            row += n
            if layout is not None:  # the windows back side by side in their texts' rows
                texts, slots, used = layout
                full = np.zeros((texts * slots, self.slot, out.shape[-1]), dtype=np.float32)
                full[used] = out  # each window row is a whole slot wide
                out = full.reshape(texts, slots * self.slot, out.shape[-1])
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(out))]))
        return responses
