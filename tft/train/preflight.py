"""Preflight: any encoder checked in seconds before the first training step, so a model that cannot be trained,
batched, exported or served by tft is refused in one line before any work is lost.

On the very model and tokenizer about to be trained (random head included), on a few real examples:

    inputs       the tokenizer's outputs against forward()'s signature (what the served tokenizer step will send);
                 token ids inside the model's vocabulary; a padding token
    train step   forward and backward on padded batches at two lengths and two batch sizes (finite loss, gradients)
    padding      each row alone against the same row in a padded batch, on the model's own padding side (the
                 server batches rows of different lengths); the other side is tried and learned if only it holds
    onnx         a trial export of the untrained model (tft export's own trace) run in ONNX Runtime at two shapes
                 other than the traced one, against PyTorch

The result is recorded in the checkpoint manifest (`preflight`), with what it learned about a family tft has no
description for (padding side, model inputs); later stages read those from the manifest. `--skip-preflight` skips
it. Costs are measured in docs/training.md.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tft.errors import TftError, first_line
from tft.families import family_of
from tft.predictions import MODEL_INPUTS, pad_batch
from tft.tasks import IGNORE_INDEX

log = logging.getLogger("tft")

# random weights answer in small logits: rows that agree within this are the same answer (the parity gate's fp32
# tolerance is 1e-4 on trained models; an untrained one compared with itself in fp32 differs by ~1e-6)
ATOL = 1e-4
ONNX_ATOL = 1e-3  # the trial graph against PyTorch (a different kernel library, untrained weights)
EXTRA_PADDING = 5  # columns of padding beyond the batch's longest row in the padding check
# other tokens in padded positions must leave every answer exactly as it was (bit for bit) in a model that respects its
# attention mask: a masked position gets exactly zero attention weight
PAD_CONTENT_ATOL = 1e-12  # measured 0.0 for all 22 described family x head cases; ConvBERT 3e-8, MobileBERT 6e-9


class PreflightError(TftError):
    """The model cannot go through tft's chain; the line says which check failed and what to do."""


@dataclass
class Preflight:
    model_type: str
    known_family: bool
    padding_side: str
    inputs: tuple[str, ...]
    seconds: float = 0.0
    checks: dict = field(default_factory=dict)  # check -> what it found

    def record(self) -> dict:
        return {"passed": True, **asdict(self), "inputs": list(self.inputs), "seconds": round(self.seconds, 2)}


def skipped_record() -> dict:
    return {"passed": None, "skipped": True}


class _Subject:
    """The model under check and how to name it in a line."""

    def __init__(self, model, tokenizer, name: str, kind, max_seq_length: int):
        self.model, self.tokenizer, self.kind, self.max_len = model, tokenizer, kind, max_seq_length
        self.model_type = getattr(model.config, "model_type", None) or "unknown"
        self.family = family_of(self.model_type, quiet=True)
        described = "" if self.family.known else ", a family tft has no description for"
        self.label = f"model '{name}' ({self.model_type}{described})"

    def fail(self, check: str, problem: str, advice: str) -> PreflightError:
        return PreflightError(f"preflight ({check}): {self.label}: {problem}; {advice} "
                              "(--skip-preflight trains it anyway)")


def check_model(model, tokenizer, features: list[dict], kind, max_seq_length: int, name: str,
                opset: int = 17) -> Preflight:
    """Run every check on `model` (left as it was found: train mode restored, gradients cleared) with up to six
    encoded examples; raise PreflightError naming the first that fails."""
    start = time.perf_counter()
    subject = _Subject(model, tokenizer, name, kind, max_seq_length)
    was_training = model.training
    # the train step draws dropout masks: the run that follows must be the one it would have been without preflight
    try:
        with torch.random.fork_rng(devices=[]):
            result = _run_checks(subject, features, opset)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


def _run_checks(subject: "_Subject", features: list[dict], opset: int) -> Preflight:
    inputs = _check_inputs(subject, features)
    features = sorted(features[:6], key=lambda f: len(f["input_ids"]))
    result = Preflight(subject.model_type, subject.family.known, subject.tokenizer.padding_side or "right", inputs)
    result.checks["inputs"] = f"{', '.join(inputs)} (forward() and the tokenizer agree)"
    result.checks["train_step"] = _check_train_step(subject, features, inputs)
    result.padding_side, result.checks["padding"] = _check_padding(subject, features, inputs)
    left = result.padding_side == "left"
    result.checks["onnx"] = _check_onnx(subject, features, inputs, left, max(opset, subject.family.min_opset))
    return result


# -- the checks ------------------------------------------------------------------------------------------------
def accepted_inputs(model) -> tuple[set[str], bool]:
    """The model inputs forward() names (a tft head's: its encoder's, which it hands them to), and whether it takes
    any other keyword too (transformers 5's **kwargs: a name it does not list may still be swallowed unused)."""
    from tft.head_modules import EncoderWithHead

    forward = model.encoder.forward if isinstance(model, EncoderWithHead) else model.forward
    params = inspect.signature(forward).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n for n in MODEL_INPUTS if n in params}, any_keyword


def _reads_token_types(subject: _Subject, features) -> bool:
    """Whether the segment ids change the answer: a forward() that only swallows them in **kwargs does not."""
    batch = pad_batch(features[:2], MODEL_INPUTS, subject.tokenizer.pad_token_id)
    with torch.no_grad():
        subject.model.eval()
        zeros = subject.model(**_tensors({**batch, "token_type_ids": np.zeros_like(batch["input_ids"])})).logits
        ones = subject.model(**_tensors({**batch, "token_type_ids": np.ones_like(batch["input_ids"])})).logits
    return not torch.equal(zeros, ones)


def _check_inputs(subject: _Subject, features: list[dict]) -> tuple[str, ...]:
    tokenizer, model = subject.tokenizer, subject.model
    if not features:
        raise subject.fail("inputs", "no example to check it on", "give the task's data (--data-dir)")
    accepted, any_keyword = accepted_inputs(model)
    if any_keyword:
        accepted |= {"input_ids", "attention_mask"} - accepted
        if "token_type_ids" in features[0] and "token_type_ids" not in accepted and _reads_token_types(subject, features):
            accepted.add("token_type_ids")
    if "input_ids" not in accepted:
        raise subject.fail("inputs", "its forward() takes no input_ids", "tft trains text encoders that read token ids")
    if "attention_mask" not in accepted:
        raise subject.fail("padding", "its forward() takes no attention_mask, so padding changes its answers",
                           "tft batches texts of different lengths when it trains and serves; it cannot serve a model "
                           "that needs every batch at one fixed length")
    if tokenizer.pad_token_id is None:
        raise subject.fail("inputs", "its tokenizer has no padding token",
                           "set one (tokenizer.pad_token) and save the tokenizer beside the model")
    embeddings = model.get_input_embeddings()
    vocab = getattr(embeddings, "num_embeddings", None)
    largest = max(max(f["input_ids"]) for f in features)
    if vocab is not None and largest >= vocab:
        raise subject.fail("inputs", f"its tokenizer makes token id {largest}, past the model's {vocab} embeddings",
                           "the tokenizer and the weights belong to different models: use the tokenizer saved with "
                           "the model")
    names = [n for n in MODEL_INPUTS if n in features[0] and n in accepted]
    dropped = [n for n in MODEL_INPUTS if n in features[0] and n not in accepted]
    if dropped:
        log.info("preflight: %s takes no %s; it is left out of training, export and serving", subject.label,
                 ", ".join(dropped))
    return tuple(names)


def _tensors(batch: dict) -> dict:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def _labels(subject: _Subject, rows: list[dict], width: int, left: bool):
    if subject.kind.per_token:
        padded = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for i, row in enumerate(rows):
            tags = row.get("labels") or [0] * len(row["input_ids"])
            if left:
                padded[i, width - len(tags):] = tags
            else:
                padded[i, :len(tags)] = tags
        return torch.from_numpy(padded)
    return torch.tensor([r["labels"] for r in rows])  # the kind's targets: class ids, numbers or multi-hot rows


def _forward_backward(subject: _Subject, rows: list[dict], inputs, width: int | None, left: bool) -> float:
    batch = pad_batch(rows, inputs, subject.tokenizer.pad_token_id, width, left)
    width = batch["input_ids"].shape[1]
    out = subject.model(**_tensors(batch), labels=_labels(subject, rows, width, left))
    loss = out.loss if getattr(out, "loss", None) is not None else out.logits.float().pow(2).mean()
    loss.backward()
    return float(loss.detach())


def _check_train_step(subject: _Subject, features: list[dict], inputs) -> str:
    model, left = subject.model, subject.tokenizer.padding_side == "left"
    model.train()
    shapes = [(features[:2], None), (features, len(features[-1]["input_ids"]) + 3)]
    for rows, width in shapes:
        try:
            loss = _forward_backward(subject, rows, inputs, width, left)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            fixed = _runs_at_fixed_length(subject, rows, inputs, left)
            model.zero_grad(set_to_none=True)
            if fixed:
                raise subject.fail("train step", f"it runs only with every batch padded to one fixed length ({fixed}); "
                                   f"at length {width or max(len(r['input_ids']) for r in rows)}: {first_line(e)}",
                                   "tft batches texts of different lengths when it trains and serves, so it cannot "
                                   "serve this family") from None
            raise subject.fail("train step", f"forward and backward fail on a padded batch of {len(rows)}: "
                               f"{first_line(e)}", "the model's own code fails on padded batches, so tft cannot "
                               "train or serve it as it is") from None
        if not np.isfinite(loss):
            raise subject.fail("train step", f"the loss of a padded batch of {len(rows)} is {loss}",
                               "check the model's weights and config (a randomly initialised head must not give NaN)")
        if not any(p.grad is not None and bool(torch.any(p.grad != 0)) for p in model.parameters()):
            raise subject.fail("train step", "no parameter gets a gradient", "the model's weights are frozen or "
                               "detached from its output")
        model.zero_grad(set_to_none=True)
    return f"forward and backward at batch 2 and {len(features)}, finite loss and gradients"


def _runs_at_fixed_length(subject: _Subject, rows, inputs, left: bool) -> int | None:
    """--max-seq-length, if padding every row to it makes the model run (it needs one fixed length)."""
    try:
        _forward_backward(subject, rows, inputs, subject.max_len, left)
        return subject.max_len
    except (RuntimeError, ValueError, TypeError, IndexError):
        return None


def _answers_alike(subject: _Subject, features, inputs, left: bool) -> float:
    """Largest difference between a row's logits alone and in a padded batch (real tokens only, per token)."""
    pad = subject.tokenizer.pad_token_id
    width = max(len(f["input_ids"]) for f in features) + EXTRA_PADDING
    with torch.no_grad():
        together = subject.model(**_tensors(pad_batch(features, inputs, pad, width, left))).logits.float().numpy()
        worst = 0.0
        for i, row in enumerate(features):
            alone = subject.model(**_tensors(pad_batch([row], inputs, pad, None, left))).logits.float().numpy()[0]
            mine = together[i]
            if subject.kind.per_token:
                n = len(row["input_ids"])
                mine = mine[width - n:] if left else mine[:n]
            worst = max(worst, float(np.max(np.abs(mine - alone))))
    return worst


def _padding_reaches_answers(subject: _Subject, features, inputs, left: bool) -> float:
    """How far the answers move when the padded positions hold other tokens (the attention mask unchanged): exactly 0
    for a model whose every layer respects the mask (all eleven described families, in both heads); a convolution or
    a neighbour-mixing embedding over the whole sequence reads them (ConvBERT, MobileBERT), and its answers then
    depend on how a row was padded, by amounts that grow with training."""
    width = max(len(f["input_ids"]) for f in features) + EXTRA_PADDING
    batch = pad_batch(features, inputs, subject.tokenizer.pad_token_id, width, left)
    other = dict(batch)
    pads = batch["attention_mask"] == 0
    other["input_ids"] = np.where(pads, (batch["input_ids"] + 1 + np.arange(width)) % max(2, len(subject.tokenizer)),
                                  batch["input_ids"])
    with torch.no_grad():
        first = subject.model(**_tensors(batch)).logits.float().numpy()
        second = subject.model(**_tensors(other)).logits.float().numpy()
    diff = np.abs(first - second)
    return float((diff[batch["attention_mask"].astype(bool)] if subject.kind.per_token else diff).max())


def _check_padding(subject: _Subject, features, inputs) -> tuple[str, str]:
    subject.model.eval()
    side = subject.tokenizer.padding_side or "right"
    drift = _answers_alike(subject, features, inputs, side == "left")
    if drift <= ATOL:
        leak = _padding_reaches_answers(subject, features, inputs, side == "left")
        if leak > PAD_CONTENT_ATOL:
            raise subject.fail("padding", f"what sits in padded positions reaches its answers (by {leak:.2g} with "
                               "the attention mask unchanged: a layer reads past the mask)",
                               "tft batches texts of different lengths when it trains and serves, so its answers "
                               "would depend on a text's neighbours; it cannot serve this family")
        return side, f"a row answers alike alone and in a padded batch (padded on the {side}, drift {drift:.1e})"
    other = "left" if side == "right" else "right"
    if not subject.family.known:
        other_drift = _answers_alike(subject, features, inputs, other == "left")
        if other_drift <= ATOL:
            log.info("preflight: %s answers alike only when padded on the %s: it is trained, exported and served so",
                     subject.label, other)
            subject.tokenizer.padding_side = other
            return other, (f"padded on the {other} (its tokenizer said {side}, where a row's answer moved by "
                           f"{drift:.1e})")
    raise subject.fail("padding", f"a row's answer changes when it is padded in a batch (by {drift:.2g} on the "
                       f"{side}{'' if subject.family.known else ' and on the ' + other})",
                       "tft batches texts of different lengths when it trains and serves; it cannot serve a model "
                       "that needs every batch at one fixed length")


def _check_onnx(subject: _Subject, features, inputs, left: bool, opset: int) -> str:
    import onnxruntime as ort

    pad = subject.tokenizer.pad_token_id
    model = subject.model.eval()
    trace_batch = pad_batch(features[:2], inputs, pad, max(len(f["input_ids"]) for f in features[:2]) + 2, left)
    with tempfile.TemporaryDirectory(prefix="tft-preflight-") as tmp:
        path = Path(tmp) / "trial.onnx"
        try:
            from tft.onnx_trace import trace

            trace(model, inputs, tuple(torch.from_numpy(trace_batch[n]) for n in inputs), path, opset,
                  subject.kind.per_token)
        except Exception as e:  # noqa: BLE001 - any exporter failure is the model's: one line for the user
            raise subject.fail("onnx", f"cannot be exported to ONNX at opset {opset}: {first_line(e, 200)}",
                               "tft serves ONNX graphs, so it cannot serve this family (a newer opset may help: "
                               "tft export --opset)") from None
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 4  # a failing run is said in our line, not in ONNX Runtime's log on stderr
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise subject.fail("onnx", f"ONNX Runtime cannot load its exported graph: {first_line(e, 200)}",
                               "tft serves ONNX graphs, so it cannot serve this family") from None
        feeds = {i.name for i in session.get_inputs()}
        shapes = [(features[:1], None), (features, max(len(f["input_ids"]) for f in features) + EXTRA_PADDING)]
        worst, tried = 0.0, []
        for rows, width in shapes:
            batch = pad_batch(rows, inputs, pad, width, left)
            shape = tuple(batch["input_ids"].shape)
            tried.append(f"{shape[0]}x{shape[1]}")
            try:
                got = session.run(None, {k: v for k, v in batch.items() if k in feeds})[0]
            except Exception as e:  # noqa: BLE001
                traced = "x".join(map(str, trace_batch["input_ids"].shape))
                raise subject.fail("onnx", f"its exported graph runs at the traced shape {traced} but not at "
                                   f"{shape[0]}x{shape[1]} in ONNX Runtime: {first_line(e, 160)}",
                                   "tft serves batches of any shape, so it cannot serve this family") from None
            with torch.no_grad():
                want = model(**_tensors(batch)).logits.float().numpy()
            mask = batch["attention_mask"].astype(bool)
            diff = np.abs(got - want)[mask] if subject.kind.per_token else np.abs(got - want)
            worst = max(worst, float(diff.max()))
        if worst > ONNX_ATOL:
            raise subject.fail("onnx", f"its exported graph answers {worst:.2g} away from PyTorch (at "
                               f"{', '.join(tried)}; allowed {ONNX_ATOL})",
                               "tft's parity gate would refuse every export of it")
    return f"opset {opset} graph runs in ONNX Runtime at {', '.join(tried)} (drift {worst:.1e})"
