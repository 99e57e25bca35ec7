"""`tft eval` and `tft predict` with a PyTorch checkpoint, on the same features as training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tft.console import on_terminal
from tft.data.dataset import load_dataset
from tft.data.features import encode, make_collator
from tft.errors import TftError
from tft.fsutil import atomic_write_text
from tft.head_modules import load_trained
from tft.inference import TextSettings, read_inputs, task_of
from tft.inference import answer_items as answer_path
from tft.manifest import check_tokenizer_files, read_checkpoint_manifest
from tft.predictions import MODEL_INPUTS, unpadded


class TorchModel:
    """A trained checkpoint in eval mode: features in, logits out (batched, dynamically padded)."""

    def __init__(self, checkpoint: str | Path, device: str | None = None):
        from transformers import AutoTokenizer

        self.checkpoint = Path(checkpoint)
        self.manifest = read_checkpoint_manifest(checkpoint)
        check_tokenizer_files(checkpoint, self.manifest.get("files"))
        self.task = task_of(self.manifest)
        self.labels = tuple(self.manifest["labels"])
        self.settings = TextSettings.of(self.manifest)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_trained(checkpoint, self.task.kind).to(self.device)
        self.collator = make_collator(self.tokenizer, self.task.kind.per_token)

    @torch.inference_mode()
    def logits(self, features: list[dict], batch_size: int = 64, progress: bool = False) -> list[np.ndarray]:
        """One array per example: (num_labels,) or, for NER, (seq_len, num_labels) without padding."""
        out = []
        names = [n for n in MODEL_INPUTS if n in features[0]] if features else []
        left, per_token = self.tokenizer.padding_side == "left", self.task.kind.per_token
        for start in tqdm(range(0, len(features), batch_size), desc="predict", disable=not (progress and on_terminal()),
                          leave=False):
            chunk = [{k: f[k] for k in names} for f in features[start:start + batch_size]]
            batch = {k: v.to(self.device) for k, v in self.collator(chunk).items()}
            logits = self.model(**batch).logits.float().cpu().numpy()
            for i, f in enumerate(chunk):
                out.append(unpadded(logits[i], len(f["input_ids"]), left) if per_token else logits[i])
        return out


def evaluate(checkpoint: str | Path, split: str = "dev", data_dir: str | None = None, batch_size: int = 64) -> dict:
    from tft.metrics import compute_per_example

    tm = TorchModel(checkpoint)
    ds = load_dataset(tm.task, data_dir or tm.manifest.get("data_dir"), (split,), labels=tm.labels)
    if not ds[split].labeled:
        raise TftError(f"{ds[split].path}: the {split} split has no labels to evaluate against")
    enc = encode(ds[split].examples, tm.tokenizer, tm.settings.max_seq_length, tm.labels, tm.task.kind,
                 tm.settings.max_chars)
    logits = tm.logits(enc.features, batch_size, progress=True)
    metrics = compute_per_example(tm.task.kind, tm.labels, logits, [f["labels"] for f in enc.features],
                                  report=tm.task.kind.per_token)
    return {"split": split, "examples": len(enc), "file": str(ds[split].path), **metrics}


def answer_items(tm: TorchModel, items: list[dict], batch_size: int = 64, progress: bool = False) -> list[dict]:
    """Raw items ({text, [text_pair]}) -> answers ({label, score} or {entities}), as `tft predict` writes them."""
    return answer_path(items, tm.settings, tm.tokenizer, lambda feats: tm.logits(feats, batch_size, progress=progress),
                       tm.labels)


def predict_file(checkpoint, input_path, output_path, batch_size: int = 64, windows: bool = True) -> int:
    tm = TorchModel(checkpoint)
    tm.settings = dataclasses.replace(tm.settings, windows=windows)
    items = read_inputs(input_path, tm.task)
    records = answer_items(tm, items, batch_size, progress=True)
    atomic_write_text(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)
