"""Model outputs -> user-facing answers, shared by PyTorch, ONNX Runtime and Triton post-processing.

Classification: softmax, top label and its score. NER: per-token labels -> word labels (first
sub-token of each word) -> BIO entities with character offsets into the original text
(`end` exclusive, so text[start:end] is the entity).
"""

from __future__ import annotations

import re

import numpy as np

# This module is copied beside the Triton Python-backend models (as tft_predictions.py): it must
# import nothing but numpy and the standard library.


# the encoder inputs tft feeds, in the order every stage lists them (a model takes those its tokenizer makes)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def max_chars_for(max_seq_length: int, max_chars: int | None = None) -> int:
    """Characters kept per text before tokenizing, in training, offline prediction and serving alike:
    far more than `max_seq_length` tokens ever need, and a 50 MB line costs no more than this."""
    return int(max_chars) if max_chars else max(4096, 32 * int(max_seq_length))


def split_words(text: str, word_joiner: str) -> list[tuple[str, int, int]]:
    """Raw text -> the words a model of this task was trained on, with character spans.

    Character-level tasks (Chinese NER, word_joiner "") use one word per character, as their
    training files do; others use whitespace-separated words, as CoNLL files do.
    """
    if word_joiner == "":
        return [(ch, i, i + 1) for i, ch in enumerate(text)]
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def pad_rows(rows, width: int, fill: int = 0, left: bool = False) -> np.ndarray:
    """Token rows -> one int64 array of `width` columns, padded on the right, or on the left for models that read
    their last token (XLNet): the same placement in training's collator, the parity gate and the served steps."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row)
        if n and left:
            out[i, width - n:] = row
        elif n:
            out[i, :n] = row
    return out


def pad_batch(features: list[dict], names, pad_id: int = 0, width: int | None = None,
              left: bool = False) -> dict[str, np.ndarray]:
    """Features -> padded int64 arrays, on the side the tokenizer pads (left for models that read their last token):
    the one padding of preflight, the parity gate, the offline runtimes and verify."""
    width = width or max(len(f["input_ids"]) for f in features)
    return {name: pad_rows([f[name] for f in features], width, pad_id if name == "input_ids" else 0, left)
            for name in names}


def unpadded(row, length: int, left: bool = False):
    """The `length` real columns of one padded row (its tokens' logits, offsets, ...)."""
    return row[len(row) - length:] if left else row[:length]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def classify(logits: np.ndarray, labels) -> list[dict]:
    """One {label, score} per row; regression (no labels) returns the raw value as score."""
    logits = np.asarray(logits, dtype=np.float32)
    if not labels:
        return [{"label": None, "score": float(row.reshape(-1)[0])} for row in logits]
    probs = softmax(logits)
    top = probs.argmax(axis=-1)
    return [{"label": labels[i], "score": float(p[i])} for i, p in zip(top, probs)]


def word_labels(token_label_ids, word_ids) -> dict[int, int]:
    """Label of each word = label of its first sub-token (as in training): one window's case of
    `word_labels_from_windows`."""
    return word_labels_from_windows([(word_ids, token_label_ids)])


def window_stride(max_seq_length: int) -> int:
    """Tokens two consecutive windows of a long per-token text share (the tokenizers' `stride`): a quarter of what a
    window holds, so each word of the overlap is read with context on both sides in one of them."""
    return max(1, (int(max_seq_length) - 2) // 4)


def word_labels_from_windows(windows) -> dict[int, int]:
    """Overlapping windows of one text -> the label of each word.

    `windows`: (word ids, token label ids) per window in order, word ids global (the text's words; -1 or None for
    special and pad tokens). A word takes the label of its first sub-token in the window where that token lies
    farthest from the window's edges. A window after the first may begin inside a word: its first token is then not
    the word's first sub-token, and the window before holds the word whole, so that token is not used."""
    best: dict[int, tuple[int, int]] = {}
    for index, (word_ids, label_ids) in enumerate(windows):
        real = [i for i, w in enumerate(word_ids) if w is not None and w >= 0]
        if not real:
            continue
        low, high = real[0], real[-1]
        seen = set()
        for i in real:
            word = int(word_ids[i])
            if word in seen:
                continue  # a later sub-token of a word seen in this window
            seen.add(word)
            if index > 0 and i == low:
                continue
            margin = min(i - low, high - i)
            if word not in best or margin > best[word][0]:
                best[word] = (margin, int(label_ids[i]))
    return {word: label for word, (_, label) in best.items()}


def entities_from_words(text: str, per_word: dict[int, int], word_spans, labels) -> list[dict]:
    """BIO over words -> entities with character offsets from the words' spans in `text`."""
    entities, current = [], None
    for wid in sorted(per_word):
        tag = labels[per_word[wid]]
        prefix, etype = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if current is not None and prefix == "I" and etype == current["type"]:
            current["end"] = word_spans[wid][1]
            continue
        if current is not None:
            entities.append(current)
            current = None
        if prefix in ("B", "I"):  # an orphan I- starts an entity, as on read
            current = {"type": etype, "start": word_spans[wid][0], "end": word_spans[wid][1]}
    if current is not None:
        entities.append(current)
    return [{"type": e["type"], "text": text[e["start"]:e["end"]], "start": e["start"], "end": e["end"]}
            for e in entities]


def entities(text: str, token_label_ids, word_ids, word_joiner: str, labels) -> list[dict]:
    spans = [(s, e) for _, s, e in split_words(text, word_joiner)]
    return entities_from_words(text, word_labels(token_label_ids, word_ids), spans, labels)


def entities_of_windows(text: str, windows, word_joiner: str, labels) -> list[dict]:
    """`entities` over a long text read in overlapping windows: (word ids, token label ids) per window."""
    spans = [(s, e) for _, s, e in split_words(text, word_joiner)]
    return entities_from_words(text, word_labels_from_windows(windows), spans, labels)


def multi_label(logits: np.ndarray, labels, threshold) -> list[dict]:
    """Multi-label rows: sigmoid scores; the labels at or over the threshold (one number, or one per label), highest
    score first (none is an answer); every label's score."""
    scores = sigmoid(logits.astype(np.float64))
    cutoffs = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),))
    out = []
    for row in scores:
        chosen = sorted((i for i in range(len(labels)) if row[i] >= cutoffs[i]), key=lambda i: -row[i])
        out.append({"labels": [labels[i] for i in chosen],
                    "scores": {label: float(row[i]) for i, label in enumerate(labels)}})
    return out
