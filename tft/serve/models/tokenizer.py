"""Triton Python-backend model: TEXT (+ TEXT_PAIR) -> input_ids, attention_mask, token_type_ids (+ OFFSETS).

Written by `tft serve build` as `<name>_tokenizer/<version>/model.py`, beside `tokenizer.json` and
`tft_predictions.py`. Needs only numpy (<2) and `tokenizers` in the server's Python.

All requests Triton hands to one `execute` call are tokenized in one `encode_batch`; each request
then gets its own arrays padded to its longest text. A bad text (invalid UTF-8, empty, missing
TEXT_PAIR) fails only its own request, with a message naming the input and row.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tft_predictions.py lies beside this file
from tft_predictions import split_words  # noqa: E402


class RequestError(Exception):
    pass


def invalid_argument(message):
    """A client error (gRPC INVALID_ARGUMENT), not a server fault; older backends lack the code."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((here / "step.json").read_text(encoding="utf-8"))  # this version's own
        self.max_seq_length = int(settings["max_seq_length"])
        self.max_chars = int(settings["max_chars"])
        self.token_task = bool(settings["token_task"])
        self.pair_task = bool(settings["pair_task"])
        self.word_joiner = settings["word_joiner"]
        self.pad_to_multiple_of = int(settings.get("pad_to_multiple_of", 1))
        self.outputs = [o["name"] for o in config["output"]]
        self.tokenizer = Tokenizer.from_file(str(here / "tokenizer.json"))
        self.tokenizer.no_padding()
        # per-token tasks: a text longer than the model reads comes back as overlapping windows (tft predict's)
        self.windows = bool(settings.get("windows")) and self.token_task
        self.tokenizer.enable_truncation(max_length=self.max_seq_length, strategy="longest_first",
                                         stride=int(settings.get("window_stride", 0)) if self.windows else 0)
        self.pad_id = int(settings.get("pad_token_id", 0))
        # models that read their last token (XLNet) are padded on the left, as in training
        self.left = settings.get("padding_side", "right") == "left"

    def _texts(self, request, name, required):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            if required:
                raise RequestError(f"{name} is required by this sentence-pair model")
            return None, None
        texts, capped = [], []
        for row, value in enumerate(tensor.as_numpy().reshape(-1)):
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RequestError(f"{name}[{row}] is not valid UTF-8 (byte {e.start})") from None
            if not text.strip():
                raise RequestError(f"{name}[{row}] is empty")
            texts.append(text[: self.max_chars])  # cap before tokenizing: a 1 MB text costs no more than max_chars
            capped.append(len(text) > self.max_chars)
        return texts, capped

    def _encode_inputs(self, texts, pairs):
        if self.token_task:
            spans = [split_words(t, self.word_joiner) for t in texts]
            encodings = self.tokenizer.encode_batch([[w for w, _, _ in s] for s in spans], is_pretokenized=True)
            return encodings, spans
        return self.tokenizer.encode_batch(texts if pairs is None else list(zip(texts, pairs))), None

    def execute(self, requests):
        parsed, all_texts, all_pairs = [], [], []
        for request in requests:
            try:
                texts, capped = self._texts(request, "TEXT", True)  # capped: each row cut at max_chars
                pairs, pair_capped = self._texts(request, "TEXT_PAIR", True) if self.pair_task else (None, None)
                if pairs is not None:
                    capped = [a or b for a, b in zip(capped, pair_capped)]
                if pairs is not None and len(pairs) != len(texts):
                    raise RequestError(f"TEXT has {len(texts)} rows but TEXT_PAIR has {len(pairs)}")
            except RequestError as e:
                parsed.append(e)
                continue
            parsed.append((len(all_texts), len(texts), capped))
            all_texts += texts
            all_pairs += pairs or []
        encodings, spans = self._encode_inputs(all_texts, all_pairs if self.pair_task else None) if all_texts \
            else ([], None)

        responses = []
        for item in parsed:
            if isinstance(item, RequestError):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=invalid_argument(f"tokenizer: {item}")))
                continue
            start, count, capped = item
            encs = encodings[start:start + count]
            arrays = self._arrays(encs, capped, spans[start:start + count] if spans is not None else None)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, arrays[name]) for name in self.outputs]))
        return responses

    def _arrays(self, encs, capped, spans):
        """One request's rows. A text read in windows has them side by side in its row, each in a slot of
        max_seq_length columns (the model step runs each slot as a row, the postprocess merges them)."""
        count = len(encs)
        rows = [[e, *e.overflowing] if self.windows else [e] for e in encs]
        slots = max(len(r) for r in rows)
        if slots > 1:
            slot = self.max_seq_length
        else:
            slot = max(len(e.ids) for e in encs)
            # bucket lengths for fixed-shape backends, never past the longest the model takes
            slot = min(-(-slot // self.pad_to_multiple_of) * self.pad_to_multiple_of, max(slot, self.max_seq_length))
        width = slot * slots
        arrays = {
            "input_ids": np.full((count, width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((count, width), dtype=np.int64),
            "token_type_ids": np.zeros((count, width), dtype=np.int64),
            "OFFSETS": np.full((count, width, 2), -1, dtype=np.int64),
            # cut before the model read it: past max_chars, or tokens past max_seq_length (not read in windows)
            "TRUNCATED": np.array([[bool(c or (e.overflowing and not self.windows))] for c, e in zip(capped, encs)],
                                  dtype=bool),
        }
        for row, windows in enumerate(rows):
            for k, enc in enumerate(windows):
                n = len(enc.ids)
                first = k * slot + (slot - n if self.left else 0)
                arrays["input_ids"][row, first:first + n] = enc.ids
                arrays["attention_mask"][row, first:first + n] = enc.attention_mask
                arrays["token_type_ids"][row, first:first + n] = enc.type_ids
                if spans is not None:
                    words = spans[row]
                    for col, wid in enumerate(enc.word_ids):
                        if wid is not None:  # a token's offsets are its word's span in the original text
                            arrays["OFFSETS"][row, first + col] = words[wid][1:]
        return arrays
