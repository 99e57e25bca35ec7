"""Heads on an encoder: `linear` (the model family's own Hugging Face head), or the original scripts' `cnn`
(TextCNN), `lstm` and `gru` over the encoder's token states, for classification, regression and NER.

    tft train --task thucnews --model bert-base-chinese --head cnn --cnn-filter-sizes 2,3,4 --cnn-filters 256
    tft train --task conll2003 --model roberta-base --head lstm --rnn-hidden 256 --rnn-layers 2

A checkpoint with such a head is the encoder's own config.json, plus a `tft_head` entry, and one
model.safetensors; `load_trained` rebuilds it from those two files (no pickle, no remote code), and export,
eval and predict load it through the same call.

This module is torch-free (the CLI reads its choices); the torch modules are in tft/head_modules.py.

Every head answers a row the same whatever its batch: padded positions are zeroed before the convolutions, and the
recurrent heads run each row's real tokens from its first (or, backwards, from its last) token, whichever side the
tokenizer pads, so dynamic batching on the server changes no answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tft.errors import TftError

HEADS = ("linear", "cnn", "lstm", "gru")
HEAD_KEY = "tft_head"  # the config.json entry that marks a checkpoint with one of these heads


@dataclass(frozen=True)
class HeadSpec:
    type: str = "linear"
    dropout: float = 0.1
    filter_sizes: tuple[int, ...] = (2, 3, 4)  # cnn: kernel widths in tokens
    filters: int = 128  # cnn: filters per width
    hidden: int = 256  # lstm/gru: hidden size per direction
    layers: int = 1  # lstm/gru
    bidirectional: bool = True  # lstm/gru

    def to_dict(self) -> dict:
        return {**asdict(self), "filter_sizes": list(self.filter_sizes)}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "filter_sizes" in known:
            known["filter_sizes"] = tuple(int(x) for x in known["filter_sizes"])
        spec = cls(**known)
        if spec.type not in HEADS:
            raise TftError(f"unknown head '{spec.type}' in config.json; tft knows {', '.join(HEADS)}")
        return spec


def parse_filter_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(not 1 <= s <= 16 for s in sizes):
        raise TftError(f"--cnn-filter-sizes {text}: give comma-separated widths from 1 to 16, such as 2,3,4")
    return sizes


def head_of(config) -> HeadSpec | None:
    entry = getattr(config, HEAD_KEY, None)
    return HeadSpec.from_dict(entry) if entry and entry.get("type", "linear") != "linear" else None
