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
           "max_chars": max_chars_for(max_length, max_chars), "kind": task.kind.name, "format": 3}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def save_features(path: Path, features: list[dict]) -> None:
    """Each list feature concatenated with its own row lengths and its values' type (token ids and tags as int64, a
    multi-hot label row as float32); each scalar one value per row."""
    arrays = {}
    for key, value in features[0].items():
        if isinstance(value, list):
            rows = [np.asarray(f[key]) for f in features]
            dtype = np.float32 if any(np.issubdtype(r.dtype, np.floating) for r in rows) else np.int64
            arrays[f"rows.{key}"] = np.concatenate([r.astype(dtype) for r in rows]) if rows else np.zeros(0, dtype)
            arrays[f"lengths.{key}"] = np.array([len(r) for r in rows], dtype=np.int64)
        else:
            arrays[f"scalar.{key}"] = np.asarray([f[key] for f in features])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_features(path: Path) -> list[dict]:
    with np.load(path, allow_pickle=False) as z:
        lists = {k.split(".", 1)[1]: (z[k], np.concatenate([[0], np.cumsum(z[f"lengths.{k.split('.', 1)[1]}"])]))
                 for k in z.files if k.startswith("rows.")}
        scalars = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith("scalar.")}
    count = len(next(iter(lists.values()))[1]) - 1 if lists else len(next(iter(scalars.values())))
    out = []
    for i in range(count):
        feat = {k: values[bounds[i]:bounds[i + 1]].tolist() for k, (values, bounds) in lists.items()}
        for k, v in scalars.items():
            feat[k] = v[i].item()
        out.append(feat)
    return out
