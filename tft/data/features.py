"""Examples -> model inputs, one code path for training, export parity and serving.

Tokenization goes through the Rust `tokenizers.Tokenizer` inside the Hugging Face fast tokenizer
(the same `tokenizer.json` the Triton tokenizer model loads), so what is served is tokenized
exactly as what was trained. Padding is dynamic (per batch, by the collator), never to a fixed length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokenizers import Tokenizer

from tft.data.readers import TextExample, TokenExample
from tft.errors import TftError
from tft.predictions import MODEL_INPUTS, max_chars_for, split_words, window_stride
from tft.tasks import IGNORE_INDEX, kind_of



@dataclass
class Encoded:
    features: list[dict]
    truncated: int  # examples cut at max_length
    capped: int = 0  # texts cut at max_chars before tokenizing

    def __len__(self):
        return len(self.features)


def backend_tokenizer(tokenizer, max_length: int, stride: int = 0) -> Tokenizer:
    """A private copy of the Rust tokenizer: no padding, truncation at max_length (with `stride`, what is past it comes
    back as overlapping windows in `overflowing`).

    tokenizer.json files may carry their own padding/truncation settings; a copy keeps ours from
    leaking into the caller's object and theirs from leaking into our features.
    """
    source = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    if source is None:
        raise TftError("a fast (Rust) tokenizer with tokenizer.json is required; this model only has a slow tokenizer")
    tok = Tokenizer.from_str(source.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, stride=stride, strategy="longest_first")
    return tok


def _prefix_first_words(node: dict | None) -> bool:
    """Turn on the leading-space marker for the first word in a (nested) pre-tokenizer or post-processor."""
    if not node:
        return False
    changed = False
    for child in node.get("pretokenizers") or node.get("processors") or ():
        changed |= _prefix_first_words(child)
    if node.get("type") == "ByteLevel" and node.get("add_prefix_space") is False:
        node["add_prefix_space"], changed = True, True
    if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
        node["prepend_scheme"], changed = "always", True
    return changed


def mark_words_as_spaced(tokenizer) -> bool:
    """Pre-split words (NER) reach a byte-level BPE or metaspace tokenizer one by one, so each is tokenized as the
    first word of a text: without a leading space ('Ġ', '▁'), unlike the same word inside running text the model
    was pre-trained on. Hugging Face asks for add_prefix_space=True with is_split_into_words for this reason; this
    sets it in the tokenizer itself, so the checkpoint's tokenizer.json (read by export and the served tokenizer
    step) words alike everywhere. True if the tokenizer was changed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    state = json.loads(backend.to_str())
    changed = _prefix_first_words(state.get("pre_tokenizer"))
    changed |= _prefix_first_words(state.get("post_processor"))
    if changed:
        tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))
        if hasattr(tokenizer, "add_prefix_space"):
            tokenizer.add_prefix_space = True
    return changed


def model_input_names(tokenizer) -> tuple[str, ...]:
    names = getattr(tokenizer, "model_input_names", None) or MODEL_INPUTS
    return tuple(n for n in MODEL_INPUTS if n in names)


def _inputs(enc, names) -> dict:
    out = {"input_ids": enc.ids, "attention_mask": enc.attention_mask}
    if "token_type_ids" in names:
        out["token_type_ids"] = enc.type_ids
    return out


def encode_texts(examples: list[TextExample], tokenizer, max_length: int, label2id: dict | None, kind: str,
                 max_chars: int | None = None) -> Encoded:
    tok = backend_tokenizer(tokenizer, max_length)
    names = model_input_names(tokenizer)
    limit = max_chars_for(max_length, max_chars)
    capped = sum(len(ex.text) > limit or len(ex.text_pair or "") > limit for ex in examples)
    pairs = [ex.text[:limit] if ex.text_pair is None else (ex.text[:limit], ex.text_pair[:limit]) for ex in examples]
    encodings = tok.encode_batch(pairs)
    features, truncated = [], 0
    for ex, enc in zip(examples, encodings):
        feat = _inputs(enc, names)
        truncated += bool(enc.overflowing)
        if ex.label is not None and label2id is not None:
            feat["labels"] = kind_of(kind).encode_label(ex.label, label2id)
        features.append(feat)
    return Encoded(features, truncated, capped)


def align_labels(word_ids: list[int | None], word_tags: list[str], label2id: dict) -> list[int]:
    """First sub-token of each word carries the word's tag; the rest and special tokens get -100."""
    labels, previous = [], None
    for wid in word_ids:
        if wid is None or wid == previous:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(label2id[word_tags[wid]])
        previous = wid
    return labels


def encode_tokens(examples: list[TokenExample], tokenizer, max_length: int, label2id: dict | None,
                  max_chars: int | None = None) -> Encoded:
    tok = backend_tokenizer(tokenizer, max_length)
    names = model_input_names(tokenizer)
    limit = max_chars_for(max_length, max_chars)
    capped = sum(len(ex.tokens) > limit or any(len(t) > limit for t in ex.tokens) for ex in examples)
    encodings = tok.encode_batch([[t[:limit] for t in ex.tokens[:limit]] for ex in examples], is_pretokenized=True)
    features, truncated = [], 0
    for ex, enc in zip(examples, encodings):
        feat = _inputs(enc, names)
        truncated += bool(enc.overflowing)
        if ex.tags is not None and label2id is not None:
            feat["labels"] = align_labels(enc.word_ids, ex.tags, label2id)
        features.append(feat)
    return Encoded(features, truncated, capped)


def encode_for_inference(texts: list[str], pairs: list[str] | None, tokenizer, max_length: int,
                         token_task: bool, word_joiner: str = " ", max_chars: int | None = None,
                         windows: bool = False) -> list[dict]:
    """Raw texts -> model inputs; NER inputs also carry `word_ids` (-1 for special tokens).

    Texts are cut at max_chars first, exactly as the served tokenizer step does. With `windows` (per-token tasks), a
    text longer than the model reads comes back as overlapping windows: its feature is the first, the others in
    `windows` (`predictions.window_stride` tokens shared); otherwise its tokens are cut and it is marked truncated."""
    windows = windows and token_task
    tok = backend_tokenizer(tokenizer, max_length, window_stride(max_length) if windows else 0)
    names = model_input_names(tokenizer)
    limit = max_chars_for(max_length, max_chars)
    texts = [t[:limit] for t in texts]
    pairs = None if pairs is None else [p[:limit] for p in pairs]
    if token_task:
        words = [[w for w, _, _ in split_words(t, word_joiner)] for t in texts]
        encodings = tok.encode_batch(words, is_pretokenized=True)
    else:
        encodings = tok.encode_batch(list(texts) if pairs is None else list(zip(texts, pairs)))
    def feature(enc):
        feat = _inputs(enc, names)
        if token_task:
            feat["word_ids"] = [-1 if w is None else w for w in enc.word_ids]
        return feat

    out = []
    for enc in encodings:
        feat = feature(enc)
        if enc.overflowing and windows:  # the rest of the text, read in windows the answer merges
            feat["windows"] = [feature(more) for more in enc.overflowing]
        elif enc.overflowing:  # tokens past max_length were cut: the answer is about the text's beginning
            feat["truncated"] = True
        out.append(feat)
    return out


def encode(examples: list, tokenizer, max_length: int, labels: tuple[str, ...], kind: str,
           max_chars: int | None = None) -> Encoded:
    """Turn examples of any task kind into features with labels (when the examples have them)."""
    label2id = {label: i for i, label in enumerate(labels)} if labels else None
    if examples and isinstance(examples[0], TokenExample):
        return encode_tokens(examples, tokenizer, max_length, label2id, max_chars)
    return encode_texts(examples, tokenizer, max_length, label2id, kind, max_chars)


def make_collator(tokenizer, token_task: bool, pad_to_multiple_of: int | None = None):
    """Dynamic padding per batch with transformers' own collators (each batch's length rounded up to a multiple of
    `pad_to_multiple_of` where given)."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if token_task:
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX,
                                                  pad_to_multiple_of=pad_to_multiple_of)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
