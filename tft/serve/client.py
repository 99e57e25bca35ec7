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
import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

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
        from tft.tasks import kind_from

        if self.tft.get("kind"):
            return shape_of(kind_from(self.tft))
        return SHAPES["entities"] if "ENTITIES" in self.outputs else SHAPES["label"]


def truncated(item: dict, max_chars: int) -> bool:
    """Is a text (or its pair) longer than the characters a model reads of it (its answer is about the prefix)?"""
    return any(isinstance(item.get(k), (str, bytes)) and len(item[k]) > max_chars for k in ("text", "text_pair"))


def is_retryable(error: Exception) -> bool:
    status = error.status() if hasattr(error, "status") else None
    text = str(error)
    if "protocol is restricted" in text:  # UNAVAILABLE, but no retry will bring the missing header
        return False
    return status in RETRYABLE_STATUS or any(t in text for t in RETRYABLE_TEXT)


# what gRPC's own words mean for the user: (a piece of its message, with --ssl or not or either, what to say)
CONNECTION_HINTS = (
    ("Connection refused", None, "nothing listens there (connection refused): is the server started, and is this its "
                                 "gRPC port (Triton's default 8001)?"),
    ("Tls handshake failed", True, "it does not speak TLS (the handshake failed): drop --ssl, or give the port where "
                                   "the server terminates TLS"),
    ("Failed parsing HTTP/2", False, "something answers there, but not gRPC (an HTTP server, or Triton's HTTP port "
                                     "8000 rather than its gRPC port 8001): give the gRPC port"),
    ("Socket closed", False, "the server closed the connection at once: if it expects TLS, add --ssl (and "
                             "--root-certificates for a private CA)"),
    ("Deadline Exceeded", None, "no answer within --timeout: is the address right and the server up?"),
)


def explain_connection(message: str, opts) -> str:
    """gRPC's raw connection error as one line saying what was found and what to do; the raw text otherwise."""
    for piece, with_ssl, hint in CONNECTION_HINTS:
        if piece.lower() in message.lower() and (with_ssl is None or with_ssl == bool(opts.ssl)):
            return hint
    return message


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
    answers = shape.decode({name: result.as_numpy(name) for name in shape.output_names()}, n)
    if "TRUNCATED" in info.outputs:  # the tokenizer step says which texts it cut (builds before it: chars only)
        for answer, cut in zip(answers, result.as_numpy("TRUNCATED").reshape(-1)):
            if cut:
                answer["truncated"] = True
    return answers


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
        if is_retryable(e) or "Tls handshake" in str(e):
            raise ClientError(f"cannot reach Triton at {opts.url}: {explain_connection(one_line(e), opts)}") from None
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
    truncated: int = 0  # answers about a text cut at the model's max_chars or max_seq_length
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
            cap = info.tft.get("max_chars")
            for (_, item), answer in zip(batch, answers):
                if cap and truncated(item, cap):  # the served tokenizer cut it at max_chars: an answer about a prefix
                    answer["truncated"] = True
                stats.truncated += bool(answer.get("truncated"))  # or the step said its tokens were cut
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
    async def _run(self, model: str, items: Iterator[dict], emit: Callable[[int, dict, dict], None], batch_size: int,
                   concurrency: int, progress: bool, stats: Summary, total: int | None) -> int:
        """Answer `items` as they are read, handing each (index, item, answer) to `emit` in input order.
        At most `window` inputs are held at once, whatever the input's length. Returns the inputs read."""
        import tritonclient.grpc.aio as aio
        from tqdm import tqdm

        from tft.console import on_terminal

        info = self.info(model)
        batch_size = max(1, min(batch_size, info.max_batch))
        concurrency = max(1, concurrency)
        window = 4 * concurrency * batch_size  # inputs read but not yet handed over
        state = {"read": 0, "next": 0}
        done: dict[int, tuple[dict, dict]] = {}  # answered out of order, waiting for an earlier one
        progressed = asyncio.Event()
        bar = tqdm(total=total, desc=f"infer {model}", unit="text", disable=not (progress and on_terminal()),
                   leave=False)
        client = aio.InferenceServerClient(self.opts.url, **_ssl_kwargs(self.opts))
        down = asyncio.Event()

        feed = InputFeed(items, window)
        taking = asyncio.Lock()

        async def take() -> list[tuple[int, dict]]:
            async with taking:  # one batch at a time, in input order
                batch = await feed.batch(batch_size, LINGER_S)
            state["read"] += len(batch)
            return [(index, {"text": item} if isinstance(item, (str, bytes)) else item) for index, item in batch]

        async def worker():
            while not down.is_set():
                while state["read"] - state["next"] >= window and not down.is_set():
                    progressed.clear()
                    await progressed.wait()  # an earlier batch is slow: read no further ahead
                batch = await take()
                if not batch:
                    return
                try:
                    results = await self._answer_batch(client, info, batch, stats)
                except Unanswered as e:
                    stats.first_error = stats.first_error or str(e)
                    down.set()  # the server is gone: stop sending, report what is unanswered
                    progressed.set()
                    return
                items_of = dict(batch)
                for index, answer in results:
                    done[index] = (items_of[index], answer)
                    stats.failed += "error" in answer
                    stats.answered += "error" not in answer
                while state["next"] in done:  # hand answers over in input order
                    item, answer = done.pop(state["next"])
                    emit(state["next"], item, answer)
                    state["next"] += 1
                progressed.set()
                bar.update(len(batch))

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            bar.close()
            await client.close()
        unread = 0
        while down.is_set() and (rest := await feed.batch(1 << 16, 0.0)):  # counted as unanswered
            unread += len(rest)
        return state["read"] + unread

    def infer(self, model: str, items: Iterable[dict] | Iterable[str], batch_size: int = 32, concurrency: int = 8,
              on_answer: Callable[[int, dict], None] | None = None, progress: bool = False,
              stream: Callable[[int, dict, dict], None] | None = None, total: int | None = None):
        """Answer every item ({"text", ["text_pair"]} or a plain string); returns (answers, Summary).

        `answers[i]` is item i's answer, None for inputs left unanswered because the server went away;
        `on_answer(index, answer)` also gets each in input order, as soon as every earlier one is in.
        With `stream` instead: `stream(index, item, answer)` gets them, nothing is kept (answers is None), and
        `items` may be any iterator: a file of any length is answered in the memory of a few batches.
        """
        kept: list[dict | None] | None = None
        if stream is None:
            items = [{"text": i} if isinstance(i, (str, bytes)) else i for i in items]
            kept = [None] * len(items)
            total = len(items)

            def stream(index, item, answer):
                kept[index] = answer
                if on_answer:
                    on_answer(index, answer)

        stats = Summary()
        start = time.perf_counter()
        read = asyncio.run(self._run(model, iter(items), stream, batch_size, concurrency, progress, stats, total))
        stats.seconds = time.perf_counter() - start
        stats.unanswered = read - stats.answered - stats.failed
        return kept, stats


LINGER_S = 0.05  # a batch waits at most this long for more inputs once it has one (a live pipe is answered promptly)


class InputFeed:
    """The inputs, read in a thread as they come (a file or a live pipe) and handed out in batches: a batch goes as
    soon as it is full, or LINGER_S after its first input, so a line typed into a pipe is answered within a batch's
    delay, not when 32 lines have arrived. At most `window` inputs are read ahead."""

    END = object()

    def __init__(self, items: Iterator, window: int):
        import threading

        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.room = threading.Semaphore(window)
        self.stopped = threading.Event()
        self.finished = False
        self.error: BaseException | None = None
        threading.Thread(target=self._pump, args=(items,), daemon=True, name="tft-input").start()

    def _pump(self, items) -> None:
        try:
            for pair in enumerate(items):
                while not self.room.acquire(timeout=0.2):
                    if self.stopped.is_set():
                        return
                self.loop.call_soon_threadsafe(self.queue.put_nowait, pair)
        except BaseException as e:  # noqa: BLE001 - a bad input line: raised where the batches are taken
            self.error = e
        finally:
            if not self.stopped.is_set():
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is taking batches any more
                    self.loop.call_soon_threadsafe(self.queue.put_nowait, self.END)

    async def _get(self, timeout: float | None):
        item = await (asyncio.wait_for(self.queue.get(), timeout) if timeout is not None else self.queue.get())
        if item is self.END:
            self.finished = True
            if self.error is not None:
                raise self.error
            return None
        self.room.release()
        return item

    async def batch(self, size: int, linger: float) -> list:
        if self.finished:
            return []
        first = await self._get(None)
        if first is None:
            return []
        out, deadline = [first], self.loop.time() + linger
        while len(out) < size and not self.finished:
            try:
                item = await self._get(max(0.0, deadline - self.loop.time()))
            except asyncio.TimeoutError:
                break
            if item is None:
                break
            out.append(item)
        return out

    def stop(self) -> None:
        self.stopped.set()


class OrderedWriter:
    """`on_answer` for Client.infer: each answer as one complete JSON line (answers arrive in input order)."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, index: int, item: dict, answer: dict) -> None:
        self.handle.write(json.dumps({**item, **answer}, ensure_ascii=False) + "\n")
        self.handle.flush()  # a whole line per write: a killed client leaves only complete lines


def _answer_fields() -> tuple[str, ...]:
    """Every answer shape's fields (tft/answers.py) and the truncation mark: what a resumed run keeps of an answer."""
    from tft.answers import SHAPES

    return tuple(dict.fromkeys(k for shape in SHAPES.values() for k in shape.keys)) + ("truncated",)


ANSWER_FIELDS = _answer_fields()


def item_key(item: dict) -> str:
    """An input's identity for resuming: its text (and pair), not its position or id."""
    import hashlib

    raw = json.dumps([item.get("text"), item.get("text_pair")], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


class PartialOutput:
    """`OUT.partial`, the answers of an unfinished `tft infer -o OUT`, one complete JSON line each, in input order.

    A first run streams its answers there and renames it to OUT when every input is answered (its memory
    does not grow with the input). Resuming keeps each answer whose input text is still in the input,
    whatever its position, and redoes inputs that are new or whose text changed; `finish` then writes OUT in
    input order (reading the input again), atomically.
    """

    def __init__(self, output, source: Callable[[], Iterator[dict]], resume: bool, answered_by: dict | None = None):
        from pathlib import Path

        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".partial")
        # which server, model and served build answered: a resume against another one would mix two models' answers
        self.by_path = self.output.with_name(self.output.name + ".partial.by.json")
        self.source, self.resume, self.answered_by = source, resume, answered_by or {}
        self.known: dict[str, dict] = {}
        self.stale = self.kept = 0
        if resume:
            if not self.path.exists():
                raise TftError(f"{self.path}: nothing to resume (no interrupted run)")
            self._check_same_answerer()
            self._drop_torn_line()
            self.known = self._read()
            wanted = {item_key(item) for item in source()}
            self.stale = sum(k not in wanted for k in self.known)
            self.kept = len(self.known) - self.stale
        elif self.path.exists():
            raise TftError(f"{self.path} exists from an interrupted run: add --resume to finish it, or delete it")

    def _check_same_answerer(self) -> None:
        try:
            earlier = json.loads(self.by_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # a partial from before tft recorded who answered
        # the model and the checkpoint it came from, not the address: a restarted server on another port is the same
        changed = [k for k in ("model", "weights_sha256") if earlier.get(k) != self.answered_by.get(k)]
        if changed:
            what = ", ".join(f"{k} {earlier.get(k)!r} then, {self.answered_by.get(k)!r} now" for k in changed)
            raise TftError(f"{self.path}: was answered by another server or model ({what}); resuming would mix two "
                           "models' answers in one file: resume against the same one, or delete the partial to start "
                           "over")

    def todo(self) -> Iterator[dict]:
        """The inputs still to ask, as they are read."""
        return (item for item in self.source() if item_key(item) not in self.known)

    def _drop_torn_line(self) -> None:
        """A killed writer may leave a last line without its newline: cut it, so that new answers start a line."""
        with open(self.path, "rb+") as handle:
            handle.seek(0, 2)
            size = end = handle.tell()
            while end > 0:
                step = min(1 << 16, end)
                handle.seek(end - step)
                chunk = handle.read(step)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    end = end - step + cut + 1
                    break
                end -= step
            if end != size:
                handle.truncate(end)

    def _read(self) -> dict[str, dict]:
        known = {}
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    break  # a killed writer may leave a torn last line
                try:
                    record = json.loads(raw.decode("utf-8", errors="replace"))
                except json.JSONDecodeError:
                    raise TftError(f"{self.path}:{number}: not a JSON line; delete the file to start over") from None
                if not isinstance(record, dict) or "text" not in record:
                    raise TftError(f"{self.path}:{number}: not an answer record of `tft infer`; delete the file to "
                                   "start over")
                if "error" not in record:  # refused inputs are asked again
                    known[item_key(record)] = {k: record[k] for k in ANSWER_FIELDS if k in record}
        return known

    def open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            self.by_path.write_text(json.dumps(self.answered_by) + "\n", encoding="utf-8")
        return open(self.path, "a", encoding="utf-8")

    def finish(self) -> None:
        """All inputs answered: OUT in input order, then no partial."""
        import os

        if not self.resume:  # the partial holds every answer in input order already
            os.replace(self.path, self.output)
            self.by_path.unlink(missing_ok=True)
            return
        answers = self._read()  # kept and new answers: resuming reads the answers it completes
        tmp = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                for item in self.source():
                    answer = answers.get(item_key(item))
                    out.write(json.dumps({**item, **(answer or {"error": "not answered"})}, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.output)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.path.unlink(missing_ok=True)
        self.by_path.unlink(missing_ok=True)
