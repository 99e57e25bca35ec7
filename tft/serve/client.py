"""gRPC client for a served tft model: texts in, labels/scores or entities out.

    from tft.serve.client import Client
    with Client("localhost:8001") as c:
        c.infer("afqmc", [{"text": "花呗怎么还款", "text_pair": "花呗如何还款"}])

Requests go through tritonclient's asyncio API with at most `concurrency` in flight, `batch_size`
texts each. UNAVAILABLE (server restarting, connection refused), deadline and crashed-stub errors
are retried with exponential backoff; a batch that the server refuses for its content (say invalid
UTF-8 in one text) is split so that only the bad input gets an error and the rest get answers.
Answers are handed to `on_answer` in input order, so a file written from it is always a complete
prefix of the input, which is what `tft infer --resume` relies on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from tft.errors import TftError

log = logging.getLogger("tft")
RETRYABLE_STATUS = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED",
                    "StatusCode.CANCELLED"}
RETRYABLE_TEXT = ("Stub process", "is not healthy", "Socket closed", "failed to connect", "Connection reset")


class ClientError(TftError):
    """The served model cannot be reached or described."""


class Unanswered(Exception):
    """Retries ran out for a batch: the server is down or keeps failing."""


@dataclass
class ClientOptions:
    url: str = "localhost:8001"
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    headers: dict = field(default_factory=dict)
    timeout: float = 30.0  # seconds per request
    retries: int = 8
    backoff: float = 0.2  # first retry delay; doubles up to 5 s


@dataclass
class ModelInfo:
    name: str
    pair: bool
    outputs: list[str]
    max_batch: int
    tft: dict

    @property
    def shape(self):
        """The answer shape the model serves: its kind's, as the build recorded it in the ensemble's config (a
        TEXT-in ensemble that tft did not build is read by its outputs)."""
        from tft.answers import SHAPES, shape_of

        if self.tft.get("kind"):
            return shape_of(self.tft["kind"])
        return SHAPES["entities"] if "ENTITIES" in self.outputs else SHAPES["label"]


def is_retryable(error: Exception) -> bool:
    status = error.status() if hasattr(error, "status") else None
    text = str(error)
    if "protocol is restricted" in text:  # UNAVAILABLE, but no retry will bring the missing header
        return False
    return status in RETRYABLE_STATUS or any(t in text for t in RETRYABLE_TEXT)


def one_line(error: Exception) -> str:
    msg = error.message() if hasattr(error, "message") and error.message() else str(error)
    return " ".join(str(msg).split())[:500]


def text_inputs(module, texts: list, pairs: list | None):
    """Python strings or raw bytes -> BYTES tensors of shape [n, 1]."""
    def column(values):
        return np.array([[v if isinstance(v, bytes) else str(v).encode("utf-8")] for v in values], dtype=np.object_)

    inputs = []
    for name, values in (("TEXT", texts), ("TEXT_PAIR", pairs)):
        if values is None:
            continue
        t = module.InferInput(name, [len(values), 1], "BYTES")
        t.set_data_from_numpy(column(values))
        inputs.append(t)
    return inputs


def canary_inputs(spec: dict):
    """The serve record's canary (a real example text) as inputs for one health-check request."""
    import tritonclient.grpc as grpcclient

    canary = spec.get("canary") or {"text": "canary", "text_pair": "canary"}
    return text_inputs(grpcclient, [canary["text"]], [canary.get("text_pair") or canary["text"]]
                       if spec.get("pair") else None)


def decode_answers(result, info: ModelInfo, n: int) -> list[dict]:
    """A gRPC result -> n answers, decoded by the model's answer shape."""
    shape = info.shape
    return shape.decode({name: result.as_numpy(name) for name in shape.output_names()}, n)


def _ssl_kwargs(opts: ClientOptions) -> dict:
    """TLS options for tritonclient (it takes file paths and reads them itself; we check them first)."""
    if not (opts.ssl or opts.root_certificates or opts.certificate_chain):
        return {}
    for path in (opts.root_certificates, opts.private_key, opts.certificate_chain):
        if path is not None and not os.access(path, os.R_OK):
            raise ClientError(f"{path}: cannot read this TLS file")
    return {"ssl": True, "root_certificates": opts.root_certificates, "private_key": opts.private_key,
            "certificate_chain": opts.certificate_chain}


def model_info(opts: ClientOptions, model: str) -> ModelInfo:
    """Describe a served ensemble from its config: inputs, outputs, batch limit, task (if tft built it)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(opts.url, **_ssl_kwargs(opts))
    try:
        config = client.get_model_config(model, headers=opts.headers or None, client_timeout=opts.timeout).config
    except InferenceServerException as e:
        if is_retryable(e):
            raise ClientError(f"cannot reach Triton at {opts.url}: {one_line(e)}") from None
        raise ClientError(f"model {model!r} at {opts.url}: {one_line(e)}") from None
    finally:
        client.close()
    inputs = [i.name for i in config.input]
    if "TEXT" not in inputs:
        raise ClientError(f"model {model!r} has no TEXT input; is it a tft ensemble? (inputs: {', '.join(inputs)})")
    tft = json.loads(config.parameters["tft"].string_value) if "tft" in config.parameters else {}
    return ModelInfo(model, "TEXT_PAIR" in inputs, [o.name for o in config.output], config.max_batch_size or 1, tft)


@dataclass
class Summary:
    answered: int = 0
    failed: int = 0  # inputs the server refused (an `error` record was written)
    unanswered: int = 0  # inputs left without any record (server down)
    seconds: float = 0.0
    retries: int = 0
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return (self.answered + self.failed) / self.seconds if self.seconds else 0.0


class Client:
    """Batched, concurrent, retrying inference on one Triton endpoint."""

    def __init__(self, url: str | None = None, options: ClientOptions | None = None):
        self.opts = options or ClientOptions()
        if url:
            self.opts.url = url
        self._infos: dict[str, ModelInfo] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            self._infos[model] = model_info(self.opts, model)
        return self._infos[model]

    # -- one batch ---------------------------------------------------------------------------------
    async def _send(self, client, info: ModelInfo, texts: list, pairs: list | None, stats: Summary):
        import tritonclient.grpc.aio as aio
        from tritonclient.utils import InferenceServerException

        delay = self.opts.backoff
        for attempt in range(self.opts.retries + 1):
            try:
                result = await client.infer(info.name, text_inputs(aio, texts, pairs), client_timeout=self.opts.timeout,
                                            headers=self.opts.headers or None)
                return decode_answers(result, info, len(texts))
            except InferenceServerException as e:
                if not is_retryable(e):
                    raise
                if attempt == self.opts.retries:
                    raise Unanswered(one_line(e)) from None
                stats.retries += 1
                log.debug("retry %d after: %s", attempt + 1, one_line(e))
                await asyncio.sleep(delay * (1 + 0.2 * random.random()))
                delay = min(delay * 2, 5.0)

    async def _answer_batch(self, client, info, batch: list[tuple[int, dict]], stats: Summary):
        """-> [(index, answer or {"error": ...})]; splits a refused batch to isolate the bad inputs."""
        from tritonclient.utils import InferenceServerException

        texts = [item.get("text", "") for _, item in batch]
        pairs = [item.get("text_pair", "") for _, item in batch] if info.pair else None
        try:
            answers = await self._send(client, info, texts, pairs, stats)
            return [(i, a) for (i, _), a in zip(batch, answers)]
        except InferenceServerException as e:
            if len(batch) == 1:
                stats.first_error = stats.first_error or one_line(e)
                return [(batch[0][0], {"error": one_line(e)})]
        out = []
        for one in batch:
            out += await self._answer_batch(client, info, [one], stats)
        return out

    # -- many inputs -------------------------------------------------------------------------------
    async def _run(self, model: str, items: list[dict], on_answer: Callable[[int, dict], None], batch_size: int,
                   concurrency: int, progress: bool, stats: Summary):
        import tritonclient.grpc.aio as aio
        from tqdm import tqdm

        info = self.info(model)
        batch_size = max(1, min(batch_size, info.max_batch))
        indexed = list(enumerate(items))
        batches = [indexed[s:s + batch_size] for s in range(0, len(indexed), batch_size)]
        queue: asyncio.Queue = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        from tft.console import on_terminal

        bar = tqdm(total=len(items), desc=f"infer {model}", unit="text", disable=not (progress and on_terminal()),
                   leave=False)
        client = aio.InferenceServerClient(self.opts.url, **_ssl_kwargs(self.opts))
        down = asyncio.Event()

        async def worker():
            while not queue.empty() and not down.is_set():
                batch = queue.get_nowait()
                try:
                    results = await self._answer_batch(client, info, batch, stats)
                except Unanswered as e:
                    stats.first_error = stats.first_error or str(e)
                    down.set()  # the server is gone: stop sending, report what is unanswered
                    return
                for index, answer in results:
                    on_answer(index, answer)
                    stats.failed += "error" in answer
                    stats.answered += "error" not in answer
                bar.update(len(batch))

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        finally:
            bar.close()
            await client.close()

    def infer(self, model: str, items: Iterable[dict] | Iterable[str], batch_size: int = 32, concurrency: int = 8,
              on_answer: Callable[[int, dict], None] | None = None, progress: bool = False):
        """Answer every item ({"text", ["text_pair"]} or a plain string); returns (answers, Summary).

        `answers[i]` is None for inputs left unanswered because the server went away.
        """
        items = [{"text": i} if isinstance(i, (str, bytes)) else i for i in items]
        answers: list[dict | None] = [None] * len(items)
        ready = {"next": 0}

        def collect(index, answer):
            answers[index] = answer
            # hand answers over in input order: each as soon as every earlier one is in
            while ready["next"] < len(items) and answers[ready["next"]] is not None:
                if on_answer:
                    on_answer(ready["next"], answers[ready["next"]])
                ready["next"] += 1

        stats = Summary()
        start = time.perf_counter()
        asyncio.run(self._run(model, items, collect, batch_size, concurrency, progress, stats))
        stats.seconds = time.perf_counter() - start
        stats.unanswered = sum(a is None for a in answers)
        return answers, stats


class OrderedWriter:
    """`on_answer` for Client.infer: each answer as one complete JSON line (answers arrive in input order)."""

    def __init__(self, handle, items: list[dict]):
        self.handle, self.items = handle, items

    def __call__(self, index: int, answer: dict) -> None:
        self.handle.write(json.dumps({**self.items[index], **answer}, ensure_ascii=False) + "\n")
        self.handle.flush()  # a whole line per write: a killed client leaves only complete lines


ANSWER_FIELDS = ("label", "score", "entities")


def item_key(item: dict) -> str:
    """An input's identity for resuming: its text (and pair), not its position or id."""
    import hashlib

    raw = json.dumps([item.get("text"), item.get("text_pair")], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


class PartialOutput:
    """`OUT.partial`, the answers of an unfinished `tft infer -o OUT`, one complete JSON line each.

    Resuming keeps each answer whose input text is still in the input, whatever its position, and
    redoes inputs that are new or whose text changed; `finish` writes OUT in input order, atomically.
    """

    def __init__(self, output, items: list[dict], resume: bool):
        from pathlib import Path

        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".partial")
        self.items = items
        self.known: dict[str, dict] = {}
        self.stale = 0
        if resume:
            if not self.path.exists():
                raise TftError(f"{self.path}: nothing to resume (no interrupted run)")
            self._read()
        elif self.path.exists():
            raise TftError(f"{self.path} exists from an interrupted run: add --resume to finish it, or delete it")
        keys = [item_key(i) for i in items]
        wanted = set(keys)
        self.stale = sum(k not in wanted for k in self.known)
        self.todo = [item for item, k in zip(items, keys) if k not in self.known]

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a killed writer may leave a torn last line
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise TftError(f"{self.path}:{number}: not a JSON line; delete the file to start over") from None
            if not isinstance(record, dict) or "text" not in record:
                raise TftError(f"{self.path}:{number}: not an answer record of `tft infer`; delete the file to "
                               "start over")
            if "error" not in record:  # refused inputs are asked again
                self.known[item_key(record)] = {k: record[k] for k in ANSWER_FIELDS if k in record}

    def open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.path, "a", encoding="utf-8")

    def finish(self, new_answers: list[dict | None]) -> None:
        """All inputs answered: OUT in input order (kept answers and new ones), then drop the partial."""
        from tft.fsutil import atomic_write_text

        answers = dict(self.known)
        for item, answer in zip(self.todo, new_answers):
            answers[item_key(item)] = answer
        lines = [json.dumps({**item, **answers[item_key(item)]}, ensure_ascii=False) + "\n" for item in self.items]
        atomic_write_text(self.output, "".join(lines))
        self.path.unlink(missing_ok=True)
