"""The task catalog: one registry that train, export and serve all read.

A task says what its data looks like (reader, files, fields), what the model predicts
(kind, labels or entity types), how it is judged (metrics), and where to get it
(default model, public archive). Adding a task is adding one `Task(...)` entry below.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

import numpy as np

from tft import predictions
from tft.errors import DataError, TaskError

SEQUENCE = "sequence_classification"
PAIR = "pair_classification"
REGRESSION = "regression"
TOKEN = "token_classification"
MULTI_LABEL = "multi_label_classification"
KINDS = (SEQUENCE, PAIR, REGRESSION, TOKEN, MULTI_LABEL)
IGNORE_INDEX = -100  # label of NER positions not scored: sub-tokens after a word's first, special tokens
WHOLE_FLOAT_RE = re.compile(r"[+-]?\d+\.0*")
INTEGER_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class LabelSite:
    """Where a label was read (file, line, field): its errors name them."""

    path: object
    line: int | None
    field: str

    def bad(self, message: str):
        raise DataError(self.path, f"field '{self.field}' {message}", self.line)


def _one_value(value, site: LabelSite):
    """A single-label kind's label is one value: not a bool, null, list or object."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        site.bad(f"has an invalid label {json.dumps(value)}")
    return value


def class_label(value, site: LabelSite, seen: dict | None = None) -> str:
    """One class label, one way in every reader: "1", 1 and 1.0 (also "1.0") are the same class. Two spellings of one
    number in a file ("01" and "1") are refused at the second (`seen` keeps the first of each)."""
    _one_value(value, site)
    if isinstance(value, float):
        if not value.is_integer():
            site.bad(f"has a non-integer class label {value}")
        value = int(value)
    label = str(value).strip()
    if WHOLE_FLOAT_RE.fullmatch(label):  # "1.0" as CSV and TSV files write 1.0
        label = str(int(float(label)))
    if seen is not None and INTEGER_RE.fullmatch(label):
        first = seen.setdefault(int(label), (label, site.line))
        if first[0] != label:
            site.bad(f"label {label!r} is the number of label {first[0]!r} (line {first[1]}): write one class one way")
    return label


@dataclass(frozen=True)
class Kind:
    """A task kind and everything that depends on it, asked by every stage instead of comparing kind names: what a
    label is and what a bad one is, how it becomes a training target, the model's outputs and loss, logits -> the
    decision the parity gate and verify compare, and which metric and answer shape judge it.

    The base class is single-label classification (one class per text); the others override what differs. A new
    kind is a subclass here and an entry in KIND_SPECS; a new answer shape is one class in tft/answers.py plus its
    served postprocess (tft/serve/models/postprocess.py)."""

    name: str
    per_token: bool = False  # one prediction per token: word ids in features, outputs [batch, sequence, labels]
    pair: bool = False  # two texts per example (TEXT and TEXT_PAIR when served)
    auto_model: str = "AutoModelForSequenceClassification"  # the transformers class that train/export/predict load
    answer: str = "label"  # its answer shape in tft/answers.py: label (+ score) | score | entities | labels
    has_labels: bool = True  # a label list, read from train or fixed by the task (regression has none)

    # --- what a trained model of this kind records beyond its name (manifests carry it as "kind_params") ------
    def params(self) -> dict:
        return {}

    def with_params(self, params: dict) -> "Kind":
        return self

    def tuned(self, logits: np.ndarray, label_ids: np.ndarray, labels) -> "Kind":
        """This kind with parameters tuned on dev logits (multi-label's per-label thresholds); most tune nothing."""
        return self

    # --- data -------------------------------------------------------------------------------------------------
    def read_label(self, value, site: LabelSite, seen: dict | None = None):
        """A label as a file holds it -> the example's label; a bad one raises at its file, line and field."""
        return class_label(value, site, seen)

    def label_names(self, label) -> tuple:
        """The label-list entries one example's label uses (checked against the list; counted for dev)."""
        return () if label is None else (label,)

    def encode_label(self, label, label2id: dict):
        """An example's label -> the training target in its features."""
        return label2id[label]

    # --- model ------------------------------------------------------------------------------------------------
    def model_config(self, labels) -> dict:
        """What transformers' config needs for this kind's outputs and loss (`problem_type` chooses the loss)."""
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {label: i for i, label in enumerate(labels)}, "problem_type": self.problem_type}

    problem_type = "single_label_classification"

    def loss(self, logits, labels):
        """The training loss of tft's own heads (cnn/lstm/gru), as transformers computes it for `problem_type`."""
        import torch

        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=IGNORE_INDEX)

    # --- judging ----------------------------------------------------------------------------------------------
    def metrics(self, logits: np.ndarray, label_ids: np.ndarray, labels, report: bool = False) -> dict:
        """The task metrics of logits against the gold targets of their features (tft/metrics.py computes them)."""
        from tft.metrics import classification_metrics

        return classification_metrics(logits.argmax(axis=-1), label_ids, len(labels))

    # --- answers ----------------------------------------------------------------------------------------------
    def scores(self, logits: np.ndarray) -> np.ndarray:
        """What served scores are made of: class probabilities."""
        return predictions.softmax(logits)

    def decisions(self, logits: np.ndarray) -> list:
        """One comparable decision per row (per token for per-token kinds): the parity gate's and verify's agreement
        counts rows whose decisions are equal."""
        return logits.argmax(-1).tolist()


@dataclass(frozen=True)
class Regression(Kind):
    """One number per text: no label list, MSE loss, Pearson/Spearman, answered as a score."""

    answer: str = "score"
    has_labels: bool = False
    problem_type = "regression"

    def read_label(self, value, site, seen=None):
        try:
            return float(_one_value(value, site))
        except ValueError:
            site.bad(f"must be a number for a regression task, got {value!r}")

    def label_names(self, label):
        return ()

    def encode_label(self, label, label2id):
        return float(label)

    def model_config(self, labels):
        return {"num_labels": 1, "problem_type": self.problem_type}

    def loss(self, logits, labels):
        import torch

        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))

    def metrics(self, logits, label_ids, labels, report=False):
        from tft.metrics import regression_metrics

        return regression_metrics(logits.reshape(-1), label_ids.reshape(-1))

    def scores(self, logits):
        return logits

    def decisions(self, logits):
        return [0] * len(logits)  # no decision to disagree on: scores are compared by value


@dataclass(frozen=True)
class TokenTagging(Kind):
    """One tag per word (BIO over entity types): per-token outputs, entity-level F1, answered as entities."""

    per_token: bool = True
    auto_model: str = "AutoModelForTokenClassification"
    answer: str = "entities"

    def metrics(self, logits, label_ids, labels, report=False):
        from tft.metrics import ner_metrics, token_tag_sequences

        return ner_metrics(*token_tag_sequences(logits.argmax(axis=-1), label_ids, labels), report=report)

    def decisions(self, logits):
        """Rows of tokens ([rows, tokens, tags]) -> one tuple of tags per row; tokens ([tokens, tags]) -> a tag each."""
        picked = logits.argmax(-1).tolist()
        return [tuple(row) for row in picked] if logits.ndim == 3 else picked


def multi_label_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict:
    """Multi-hot [rows, labels] decisions against gold: micro and macro F1 over labels, and exact match (every label
    of a row right; a row with no gold label and none answered is right)."""
    from sklearn.metrics import f1_score

    predicted, gold = predicted.astype(bool), gold.astype(bool)
    return {"micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
            "exact_match": float((predicted == gold).all(axis=1).mean()) if len(gold) else 0.0}


@dataclass(frozen=True)
class MultiLabel(Kind):
    """Any number of labels per text (topics, intents, content flags): one sigmoid score per label, a decision
    threshold, binary cross-entropy (transformers' `multi_label_classification`), micro/macro F1 and exact match. A
    label is a JSON list, or a CSV/TSV cell of labels joined by the task's separator; no label is a valid answer."""

    answer: str = "labels"
    threshold: float = 0.5  # a label is answered when its score reaches it; recorded in the checkpoint manifest
    separator: str | None = None  # CSV/TSV cells: the labels joined by it (JSON files: a list)
    thresholds: tuple[float, ...] | None = None  # per label, in label order, where tuned on dev (else `threshold`)
    tune: bool = False  # --tune-thresholds: choose `thresholds` on the dev split after training
    problem_type = "multi_label_classification"

    def params(self):
        out = {"threshold": self.threshold, "separator": self.separator}
        return {**out, "thresholds": list(self.thresholds)} if self.thresholds else out

    def with_params(self, params):
        thresholds = params.get("thresholds")
        return dataclasses.replace(self, threshold=float(params.get("threshold", self.threshold)),
                                   separator=params.get("separator", self.separator),
                                   thresholds=tuple(float(t) for t in thresholds) if thresholds else self.thresholds,
                                   tune=bool(params.get("tune", self.tune)))

    @property
    def cutoffs(self):
        """The decision threshold of each label (one number where none were tuned)."""
        return np.asarray(self.thresholds) if self.thresholds else self.threshold

    def tuned(self, logits, label_ids, labels):
        """Per label, the threshold of a 0.05-step grid that gives that label's best F1 on these (dev) rows; ties go
        to the one nearest the global threshold. Tuned and judged on the same split, its dev figure is optimistic."""
        if not self.tune or not len(logits):
            return self
        scores, gold = self.scores(np.asarray(logits, dtype=np.float64)), np.asarray(label_ids) > 0.5
        grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
        chosen = []
        for j in range(scores.shape[1]):
            def f1(t):
                hit = scores[:, j] >= t
                tp = float((hit & gold[:, j]).sum())
                return 2 * tp / (hit.sum() + gold[:, j].sum()) if hit.sum() + gold[:, j].sum() else 0.0
            chosen.append(float(max(grid, key=lambda t: (f1(t), -abs(t - self.threshold)))))
        return dataclasses.replace(self, thresholds=tuple(chosen), tune=False)

    def read_label(self, value, site, seen=None):
        if isinstance(value, str) and self.separator is not None:
            parts = value.split(self.separator) if value.strip() else []
        elif isinstance(value, list):
            parts = value
        else:
            site.bad(f"must be a list of labels for a multi-label task, got {json.dumps(value, ensure_ascii=False)}"
                     + (" (CSV cells: labels joined by --label-separator)" if isinstance(value, str) else ""))
        names = []
        for part in parts:
            if isinstance(part, bool) or not isinstance(part, (str, int)):
                site.bad(f"has an invalid label {json.dumps(part, ensure_ascii=False)} in its list")
            name = str(part).strip()
            if not name:
                site.bad(f"has an empty label in {json.dumps(value, ensure_ascii=False)}")
            if name not in names:
                names.append(name)
        return tuple(names)

    def label_names(self, label):
        return () if label is None else tuple(label)

    def encode_label(self, label, label2id):
        row = [0.0] * len(label2id)
        for name in label:
            row[label2id[name]] = 1.0
        return row

    def loss(self, logits, labels):
        import torch

        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def metrics(self, logits, label_ids, labels, report=False):
        return multi_label_metrics(np.array(self.decisions(logits), dtype=bool).reshape(label_ids.shape),
                                   label_ids > 0.5)

    def scores(self, logits):
        return predictions.sigmoid(logits)

    def decisions(self, logits):
        return [tuple(row) for row in (self.scores(logits) >= self.cutoffs).tolist()]


KIND_SPECS = {
    SEQUENCE: Kind(SEQUENCE),
    PAIR: Kind(PAIR, pair=True),
    REGRESSION: Regression(REGRESSION),
    TOKEN: TokenTagging(TOKEN),
    MULTI_LABEL: MultiLabel(MULTI_LABEL),
}


def is_pair(kind: Kind, text_pair_field: str | None) -> bool:
    """Two texts per input: a pair kind, or a text task trained with a second text field."""
    return kind.pair or (text_pair_field is not None and not kind.per_token)


def kind_from(manifest: dict) -> Kind:
    """The kind a manifest records: its name and the parameters it was trained with (a checkpoint's, an export's)."""
    return kind_of(manifest["kind"]).with_params(manifest.get("kind_params") or {})


def kind_of(name: "str | Kind") -> Kind:
    """A kind from its name, as manifests record it (a Kind is returned as it is)."""
    if isinstance(name, Kind):
        return name
    try:
        return KIND_SPECS[name]
    except KeyError:
        raise TaskError(f"unknown task kind {name!r}: choose one of {', '.join(KIND_SPECS)}") from None

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Archive:
    """A public archive holding the task's split files."""

    url: str
    sha256: str | None = None  # checked when known; the size is always checked against the server's
    subdir: str | None = None  # folder inside the archive that holds the files, if any


@dataclass(frozen=True)
class Task:
    name: str
    kind: Kind  # given by name (SEQUENCE, PAIR, ...) in the entries below; resolved once, here
    reader: str  # key into tft.data.readers.READERS
    description: str
    files: dict[str, str]  # split -> file name, as the official release names it
    text_field: str | None = None
    text_pair_field: str | None = None
    label_field: str | None = None
    id_field: str | None = None
    labels: tuple[str, ...] | None = None  # classification labels; None = read from the train split
    entity_types: tuple[str, ...] | None = None  # NER; None = read from the train split
    tag_scheme: str = "BIO"  # NER files: "BIO" or "IOB1" (converted to BIO on read)
    skip_labels: tuple[str, ...] = ()  # labels meaning "no gold label" (CMNLI's "-"): dropped with a count
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    default_model: str = "bert-base-uncased"
    language: str = "en"
    archive: Archive | None = None
    word_joiner: str = " "  # NER: how words join back into text ("" for Chinese characters)
    configurable: bool = False  # generic tasks take --text-field/--text-pair-field/--label-field

    def __post_init__(self):
        object.__setattr__(self, "kind", kind_of(self.kind))

    @property
    def is_token_task(self) -> bool:
        return self.kind.per_token

    @property
    def is_pair(self) -> bool:
        return is_pair(self.kind, self.text_pair_field)

    def with_fields(self, text_field=None, text_pair_field=None, label_field=None, multi_label=False,
                    label_separator=None, threshold=None, tune_thresholds=False) -> "Task":
        """Generic tasks only: the user names the fields of their own files, and makes them multi-label."""
        if not multi_label and (label_separator is not None or threshold is not None or tune_thresholds):
            given = ("--label-separator" if label_separator is not None else "--threshold" if threshold is not None
                     else "--tune-thresholds")
            raise TaskError(f"{given} applies to multi-label tasks: add --multi-label")
        if not self.configurable:
            if text_field or text_pair_field or label_field or multi_label:
                raise TaskError(
                    f"task '{self.name}' has fixed fields; --text-field/--text-pair-field/--label-field/--multi-label "
                    "apply to the generic 'csv' and 'jsonl' tasks"
                )
            return self
        changes = {}
        if text_field:
            changes["text_field"] = text_field
        if text_pair_field:
            changes["text_pair_field"] = text_pair_field
            changes["kind"] = PAIR
        if label_field:
            changes["label_field"] = label_field
        if multi_label:
            if label_separator == "":
                raise TaskError("--label-separator: give the character(s) that join labels in a cell, e.g. ','")
            separator = label_separator or ("," if self.reader != "json" else None)
            changes.update(kind=KIND_SPECS[MULTI_LABEL].with_params({"threshold": threshold or 0.5,
                                                                     "separator": separator,
                                                                     "tune": tune_thresholds}),
                           metrics=("micro_f1", "macro_f1", "exact_match"), main_metric="micro_f1")
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.name
        d["archive"] = self.archive.url if self.archive else None
        return d


def tags_for(entity_types) -> tuple[str, ...]:
    """BIO tag list for entity types, "O" first (id 0)."""
    out = ["O"]
    for t in entity_types:
        out += [f"B-{t}", f"I-{t}"]
    return tuple(out)


_CLUE = "https://storage.googleapis.com/cluebenchmark/tasks/{}_public.zip"
_GLUE = "https://dl.fbaipublicfiles.com/glue/data/{}.zip"
_CLUE_FILES = {"train": "train.json", "dev": "dev.json", "test": "test.json"}
_GLUE_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_CLS_METRICS = ("accuracy", "f1")

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


# --- CLUE ---------------------------------------------------------------------------------------
register(Task(
    "afqmc", PAIR, "json", "CLUE AFQMC: Ant Financial question matching (sentence pair, 0/1)",
    _CLUE_FILES, "sentence1", "sentence2", "label", "id", labels=("0", "1"),
    metrics=_CLS_METRICS, default_model="bert-base-chinese", language="zh",
    archive=Archive(_CLUE.format("afqmc")),
))
TNEWS_LABELS = (
    "news_story", "news_culture", "news_entertainment", "news_sports", "news_finance", "news_house",
    "news_car", "news_edu", "news_tech", "news_military", "news_travel", "news_world", "news_stock",
    "news_agriculture", "news_game",
)
register(Task(
    "tnews", SEQUENCE, "json", "CLUE TNEWS: 15-class Toutiao news title classification",
    _CLUE_FILES, "sentence", None, "label_desc", "id", labels=TNEWS_LABELS,
    metrics=_CLS_METRICS, default_model="bert-base-chinese", language="zh",
    archive=Archive(_CLUE.format("tnews")),
))
register(Task(
    "iflytek", SEQUENCE, "json", "CLUE IFLYTEK: 119-class app description classification",
    _CLUE_FILES, "sentence", None, "label", "id", labels=None,
    metrics=_CLS_METRICS, default_model="bert-base-chinese", language="zh",
    archive=Archive(_CLUE.format("iflytek")),
))
register(Task(
    "cmnli", PAIR, "json", "CLUE CMNLI: Chinese natural language inference (3 classes)",
    _CLUE_FILES, "sentence1", "sentence2", "label", "id",
    labels=("contradiction", "entailment", "neutral"), skip_labels=("-",),
    metrics=_CLS_METRICS, default_model="bert-base-chinese", language="zh",
    archive=Archive(_CLUE.format("cmnli")),
))

# --- GLUE ---------------------------------------------------------------------------------------
register(Task(
    "sst2", SEQUENCE, "tsv", "GLUE SST-2: binary sentiment of movie-review sentences",
    _GLUE_FILES, "sentence", None, "label", "index", labels=("0", "1"),
    metrics=_CLS_METRICS, archive=Archive(_GLUE.format("SST-2"), subdir="SST-2"),
))
register(Task(
    "mrpc", PAIR, "tsv", "GLUE MRPC: paraphrase detection (no free archive: pass --data-dir)",
    _GLUE_FILES, "#1 String", "#2 String", "Quality", "index", labels=("0", "1"),
    metrics=("f1", "accuracy"), main_metric="f1",
))
register(Task(
    "qnli", PAIR, "tsv", "GLUE QNLI: does the sentence answer the question",
    _GLUE_FILES, "question", "sentence", "label", "index", labels=("entailment", "not_entailment"),
    metrics=_CLS_METRICS, archive=Archive(_GLUE.format("QNLIv2"), subdir="QNLI"),
))
register(Task(
    "rte", PAIR, "tsv", "GLUE RTE: recognizing textual entailment",
    _GLUE_FILES, "sentence1", "sentence2", "label", "index", labels=("entailment", "not_entailment"),
    metrics=_CLS_METRICS, archive=Archive(_GLUE.format("RTE"), subdir="RTE"),
))
register(Task(
    "stsb", REGRESSION, "tsv", "GLUE STS-B: sentence similarity score 0-5 (regression)",
    _GLUE_FILES, "sentence1", "sentence2", "score", "index",
    metrics=("pearson", "spearmanr"), main_metric="pearson",
    archive=Archive(_GLUE.format("STS-B"), subdir="STS-B"),
))

# --- CSV / JSONL ----------------------------------------------------------------------------------
register(Task(
    "thucnews", SEQUENCE, "csv", "THUCNews-style news classification CSV (header: label,text)",
    {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}, "text", None, "label",
    metrics=_CLS_METRICS, default_model="bert-base-chinese", language="zh",
))
register(Task(
    "csv", SEQUENCE, "csv", "Generic CSV classification (choose columns with --text-field etc.)",
    {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}, "text", None, "label", "id",
    metrics=_CLS_METRICS, configurable=True,
))
register(Task(
    "jsonl", SEQUENCE, "json", "Generic JSON-lines classification (choose fields with --text-field etc.)",
    {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}, "text", None, "label", "id",
    metrics=_CLS_METRICS, configurable=True,
))

# --- NER ----------------------------------------------------------------------------------------
_NER_METRICS = ("f1", "precision", "recall")
register(Task(
    "conll2003", TOKEN, "columns", "CoNLL-2003 English NER (no free archive: pass --data-dir)",
    {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"},
    entity_types=("PER", "ORG", "LOC", "MISC"), tag_scheme="IOB1",
    metrics=_NER_METRICS, main_metric="f1", default_model="bert-base-cased",
))
register(Task(
    "peoples_daily", TOKEN, "columns", "People's Daily Chinese NER (character per line, BIO)",
    {"train": "example.train", "dev": "example.dev", "test": "example.test"},
    entity_types=("PER", "ORG", "LOC"), metrics=_NER_METRICS, main_metric="f1",
    default_model="bert-base-chinese", language="zh", word_joiner="",
    archive=Archive("http://s3.bmio.net/kashgari/china-people-daily-ner-corpus.tar.gz",
                    subdir="china-people-daily-ner-corpus"),
))
register(Task(
    "msra", TOKEN, "columns", "MSRA Chinese NER (character per line, BIO; pass --data-dir)",
    {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
    entity_types=("PER", "ORG", "LOC"), metrics=_NER_METRICS, main_metric="f1",
    default_model="bert-base-chinese", language="zh", word_joiner="",
))
register(Task(
    "cluener", TOKEN, "cluener", "CLUENER2020: fine-grained Chinese NER, 10 types (span JSON)",
    _CLUE_FILES, id_field="id",
    entity_types=("address", "book", "company", "game", "government", "movie", "name",
                  "organization", "position", "scene"),
    metrics=_NER_METRICS, main_metric="f1", default_model="bert-base-chinese", language="zh",
    word_joiner="", archive=Archive(_CLUE.format("cluener")),
))
register(Task(
    "bio", TOKEN, "columns", "Generic BIO token files: token ... tag per line, blank line between sentences",
    {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
    metrics=_NER_METRICS, main_metric="f1",
))


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}") from None
