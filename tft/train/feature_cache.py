"""Tokenized features cached on disk, keyed by everything that changes them (file contents, tokenizer,
max length and characters, labels, fields), as plain npz arrays (no pickles)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tft.data.features import model_input_names
from tft.predictions import max_chars_for


def feature_fingerprint(split, tokenizer, max_length: int, labels, limit, task, max_chars=None) -> str:
    tok_json = tokenizer.backend_tokenizer.to_str()
    key = {"file": split.sha256, "tokenizer": hashlib.sha256(tok_json.encode()).hexdigest(),
           "inputs": list(model_input_names(tokenizer)), "max_length": max_length, "labels": list(labels),
           "limit": limit, "task": task.name, "fields": [task.text_field, task.text_pair_field, task.label_field],
           "max_chars": max_chars_for(max_length, max_chars), "format": 2}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def save_features(path: Path, features: list[dict]) -> None:
    arrays = {"lengths": np.array([len(f["input_ids"]) for f in features], dtype=np.int64)}
    for key, value in features[0].items():
        if isinstance(value, list):
            arrays[key] = np.concatenate([np.asarray(f[key], dtype=np.int64) for f in features])
        else:
            arrays[f"scalar.{key}"] = np.asarray([f[key] for f in features])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_features(path: Path) -> list[dict]:
    with np.load(path, allow_pickle=False) as z:
        lengths = z["lengths"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        seqs = {k: z[k] for k in z.files if k != "lengths" and not k.startswith("scalar.")}
        scalars = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith("scalar.")}
    out = []
    for i in range(len(lengths)):
        feat = {k: v[bounds[i]:bounds[i + 1]].tolist() for k, v in seqs.items()}
        for k, v in scalars.items():
            feat[k] = v[i].item()
        out.append(feat)
    return out
