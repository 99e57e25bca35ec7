"""Answer shapes: what one answer of a task kind carries, as one torch-free object per shape.

    label     {label, score}: classification (single texts and pairs)
    score     {score}: regression (label None)
    entities  {entities: [{type, text, start, end}]}: NER, character offsets into the text (end exclusive)
    labels    {labels: [...], scores: {label: p}}: multi-label, the labels at or over the kind's threshold

Each shape owns everything that depends on it: its answers from model logits (`tft predict`, `tft eval`,
the parity gate and `tft verify` all go through `answer_items` in tft/inference.py, then here), the
ensemble outputs Triton serves, the client's decoding of them, the agreement rule between two answers and
the task metric of a list of answers. The client and verify ask the kind's shape (`shape_of`); nothing
guesses a shape from output names or dict keys. A new answer shape is one class here, named by a `Kind`
in tft/tasks.py, and its served postprocess (tft/serve/models/postprocess.py).
"""

from __future__ import annotations

import json

import numpy as np

from tft import predictions
from tft.tasks import Kind, kind_of


# how far a served score may be from the same file's score offline: float noise for fp32 and fp16; dynamic int8
# computes its activation scales per batch, so its scores move with the batch the server forms; bf16's kernels round
# differently at other batch shapes (OpenVINO bf16 on MiniLM SST-2: 0.005 at most). `tft verify` judges
# served answers by it, and `--artifact auto` serves only artifacts whose scores export measured moving less.
SERVED_SCORE_ATOL = {"fp32": 1e-4, "fp16": 1e-3, "int8": 1e-2, "bf16": 1e-2}


class AnswerShape:
    name = ""
    keys: tuple[str, ...] = ()  # the fields an answer carries (others, like id and text, are the item's)
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()  # ensemble outputs: (name, Triton dtype, dims)

    def answers(self, logits: list[np.ndarray], features: list[dict], items: list[dict], labels,
                word_joiner: str) -> list[dict]:
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray], n: int) -> list[dict]:
        """The ensemble's output tensors (name -> numpy array) -> n answers."""
        raise NotImplementedError

    def same(self, a: dict, b: dict) -> bool:
        """Do two answers agree (the agreement figures of the parity gate and verify)."""
        raise NotImplementedError

    def score_diff(self, a: dict, b: dict) -> float | None:
        """How far two agreeing answers' scores are apart (None: the shape carries no score)."""
        return None

    def gold(self, examples, labels, word_joiner: str) -> list:
        """Read examples -> what `metric` compares answers with."""
        return [ex.label for ex in examples]

    def metric(self, answers: list[dict], gold: list, labels) -> dict:
        raise NotImplementedError

    def for_kind(self, kind: Kind) -> "AnswerShape":
        """This shape with the kind's parameters (a decision threshold) bound; most shapes need none."""
        return self

    def output_names(self) -> list[str]:
        return [name for name, _, _ in self.outputs]

    def strip(self, answer: dict) -> dict:
        return {k: v for k, v in answer.items() if k in self.keys}


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


class LabelShape(AnswerShape):
    name = "label"
    keys = ("label", "score")
    outputs = (("LABEL", "TYPE_STRING", (1,)), ("SCORE", "TYPE_FP32", (1,)))

    def answers(self, logits, features, items, labels, word_joiner):
        return predictions.classify(np.stack(logits), labels)

    def decode(self, arrays, n):
        labels, scores = _strings(arrays["LABEL"]), arrays["SCORE"].reshape(-1)
        return [{"label": labels[i] or None, "score": float(scores[i])} for i in range(n)]

    def same(self, a, b):
        return a.get("label") == b.get("label")

    def score_diff(self, a, b):
        return abs(a["score"] - b["score"])

    def metric(self, answers, gold, labels):
        from tft.metrics import classification_metrics

        ids = {label: i for i, label in enumerate(labels)}
        return classification_metrics(np.array([ids[a["label"]] for a in answers]), np.array([ids[g] for g in gold]),
                                      len(labels))


class ScoreShape(LabelShape):
    """Regression: one value per text, served as SCORE with an empty LABEL."""

    name = "score"

    def metric(self, answers, gold, labels):
        from tft.metrics import regression_metrics

        return regression_metrics(np.array([a["score"] for a in answers]), np.array([float(g) for g in gold]))


class EntitiesShape(AnswerShape):
    name = "entities"
    keys = ("entities",)
    outputs = (("ENTITIES", "TYPE_STRING", (1,)),)

    def answers(self, logits, features, items, labels, word_joiner):
        out = []
        for item, lg, feat in zip(items, logits, features):
            per_window = lg if isinstance(lg, list) else [lg]  # a list: a text read in overlapping windows
            windows = [(w["word_ids"], x.argmax(-1)) for w, x in zip((feat, *feat.get("windows", ())), per_window)]
            out.append({"entities": predictions.entities_of_windows(item["text"], windows, word_joiner, labels)})
        return out

    def decode(self, arrays, n):
        return [{"entities": json.loads(e)} for e in _strings(arrays["ENTITIES"])[:n]]

    def same(self, a, b):
        return a.get("entities") == b.get("entities")

    def gold(self, examples, labels, word_joiner):
        out = []
        label2id = {label: i for i, label in enumerate(labels)}
        for ex in examples:
            text = ex.text if ex.text is not None else word_joiner.join(ex.tokens)
            spans = [(s, e) for _, s, e in predictions.split_words(text, word_joiner)]
            if len(spans) != len(ex.tags):  # words of the text differ from the file's tokens: compare by token
                spans, pos = [], 0
                for tok in ex.tokens:
                    spans.append((pos, pos + len(tok)))
                    pos += len(tok) + len(word_joiner)
            per_word = {i: label2id[t] for i, t in enumerate(ex.tags)}
            out.append({(e["type"], e["start"], e["end"])
                        for e in predictions.entities_from_words(text, per_word, spans, labels)})
        return out

    def metric(self, answers, gold, labels):
        tp = pred_n = gold_n = 0
        for a, g in zip(answers, gold):
            p = {(e["type"], e["start"], e["end"]) for e in a["entities"]}
            tp, pred_n, gold_n = tp + len(p & g), pred_n + len(p), gold_n + len(g)
        precision = tp / pred_n if pred_n else 0.0
        recall = tp / gold_n if gold_n else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}


class LabelsShape(AnswerShape):
    """Multi-label: every label whose score reaches the kind's threshold (highest score first; none is an answer),
    and every label's score; served as two JSON strings, LABELS and SCORES."""

    name = "labels"
    keys = ("labels", "scores")
    outputs = (("LABELS", "TYPE_STRING", (1,)), ("SCORES", "TYPE_STRING", (1,)))
    threshold = 0.5

    def for_kind(self, kind):
        bound = LabelsShape()
        bound.threshold = getattr(kind, "cutoffs", self.threshold)
        return bound

    def answers(self, logits, features, items, labels, word_joiner):
        return predictions.multi_label(np.stack(logits), labels, self.threshold)

    def decode(self, arrays, n):
        labels, scores = _strings(arrays["LABELS"]), _strings(arrays["SCORES"])
        return [{"labels": json.loads(labels[i]), "scores": json.loads(scores[i])} for i in range(n)]

    def same(self, a, b):
        return sorted(a.get("labels") or []) == sorted(b.get("labels") or [])

    def score_diff(self, a, b):
        return max((abs(a["scores"][k] - b["scores"].get(k, 0.0)) for k in a["scores"]), default=0.0)

    def gold(self, examples, labels, word_joiner):
        return [set(ex.label or ()) for ex in examples]

    def metric(self, answers, gold, labels):
        from tft.tasks import multi_label_metrics

        index = {label: i for i, label in enumerate(labels)}

        def hot(names):
            row = np.zeros(len(labels), dtype=bool)
            row[[index[n] for n in names]] = True
            return row

        return multi_label_metrics(np.array([hot(a["labels"]) for a in answers]), np.array([hot(g) for g in gold]))


SHAPES: dict[str, AnswerShape] = {s.name: s for s in (LabelShape(), ScoreShape(), EntitiesShape(), LabelsShape())}


def shape_of(kind: Kind | str) -> AnswerShape:
    """The answer shape of a task kind (a Kind or its name, as manifests record it)."""
    spec = kind if isinstance(kind, Kind) else kind_of(kind)
    return SHAPES[spec.answer].for_kind(spec)
