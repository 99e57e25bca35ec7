"""Triton Python-backend model: logits -> the answer shape's outputs: LABEL + SCORE (classification, regression) or
ENTITIES (NER, JSON).

Uses `tft_predictions.py` (a copy of tft/predictions.py), the same code `tft predict` uses, so
served answers are computed exactly as offline ones. Entity offsets are characters of the original
TEXT, `end` exclusive.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tft_predictions.py lies beside this file
from tft_predictions import classify, entities_from_words, multi_label, word_labels_from_windows  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((here / "step.json").read_text(encoding="utf-8"))  # this version's own
        self.labels = settings["labels"]
        # a per-token text read in windows: its row holds them side by side, each in a slot of max_seq_length
        self.slot = int(settings["max_seq_length"]) if settings.get("windows") else 0
        self.params = settings.get("kind_params") or {}
        # the answer shape (tft/answers.py) names the function; repositories built before it said token_task only
        answer = settings.get("answer") or ("entities" if settings["token_task"] else "label")
        self.answer = {"label": self._classify, "score": self._classify, "entities": self._entities,
                       "labels": self._labels}[answer]

    def _classify(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        answers = classify(logits, self.labels)
        labels = np.array([[(a["label"] or "").encode("utf-8")] for a in answers], dtype=np.object_)
        scores = np.array([[a["score"]] for a in answers], dtype=np.float32)
        return [pb_utils.Tensor("LABEL", labels), pb_utils.Tensor("SCORE", scores)]

    def _labels(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        # per-label thresholds where training tuned them on dev, else the one threshold
        answers = multi_label(logits, self.labels, self.params.get("thresholds") or float(self.params["threshold"]))
        labels = [[json.dumps(a["labels"], ensure_ascii=False).encode("utf-8")] for a in answers]
        scores = [[json.dumps(a["scores"], ensure_ascii=False).encode("utf-8")] for a in answers]
        return [pb_utils.Tensor("LABELS", np.array(labels, dtype=np.object_)),
                pb_utils.Tensor("SCORES", np.array(scores, dtype=np.object_))]

    def _entities(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        offsets = pb_utils.get_input_tensor_by_name(request, "OFFSETS").as_numpy()
        out = []
        length = min(logits.shape[1], offsets.shape[1])
        # rows of windows side by side (slots of max_seq_length), or one window per row
        slot = self.slot if self.slot and length > self.slot else length
        for row, raw in enumerate(texts):
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
            per_word, spans = self._word_labels(logits[row, :length], offsets[row, :length], slot)
            ents = entities_from_words(text, per_word, spans, self.labels)
            out.append([json.dumps(ents, ensure_ascii=False).encode("utf-8")])
        return [pb_utils.Tensor("ENTITIES", np.array(out, dtype=np.object_))]

    @staticmethod
    def _word_labels(logits, offsets, slot):
        """One row of `slot`-wide windows (tokens carry their word's span, -1 for special and pad tokens) -> (label
        per word, the words' spans), as `tft predict` reads them: a word's label is its first sub-token's, in the
        window where it has the most context; words are numbered by their spans, the same word in two windows one."""
        spans = sorted({(int(s), int(e)) for s, e in offsets if s >= 0})
        index = {span: i for i, span in enumerate(spans)}
        labels = logits.argmax(-1)
        windows = []
        for first in range(0, len(offsets), slot):
            window = offsets[first:first + slot]
            windows.append(([index[(int(s), int(e))] if s >= 0 else -1 for s, e in window], labels[first:first + slot]))
        return word_labels_from_windows(windows), spans

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensors = self.answer(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # one bad request must not take the batch down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"postprocess: {e}")))
        return responses
