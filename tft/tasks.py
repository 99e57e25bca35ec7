"""The task catalog: one registry that train, export and serve all read.

A task says what its data looks like (reader, files, fields), what the model predicts
(kind, labels or entity types), how it is judged (metrics), and where to get it
(default model, public archive). Adding a task is adding one `Task(...)` entry below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tft.errors import TaskError

SEQUENCE = "sequence_classification"
PAIR = "pair_classification"
REGRESSION = "regression"
TOKEN = "token_classification"
KINDS = (SEQUENCE, PAIR, REGRESSION, TOKEN)


@dataclass(frozen=True)
class Kind:
    """What a task kind decides, read by every stage instead of comparing kind names.

    A new kind whose answers are a label, a score or entities is one entry in KIND_SPECS; a new answer
    shape is one class in tft/answers.py (its answers, Triton outputs, decoding, agreement and metric)
    plus the server's postprocess step (`tft/serve/models/postprocess.py`)."""

    name: str
    per_token: bool = False  # one prediction per token: word ids in features, outputs [batch, sequence, labels]
    regression: bool = False  # one float per text: no label list, MSE loss, Pearson/Spearman
    pair: bool = False  # two texts per example (TEXT and TEXT_PAIR when served)
    auto_model: str = "AutoModelForSequenceClassification"  # the transformers class that train/export/predict load
    answer: str = "label"  # its answer shape in tft/answers.py: label (+ score) | score | entities


KIND_SPECS = {
    SEQUENCE: Kind(SEQUENCE),
    PAIR: Kind(PAIR, pair=True),
    REGRESSION: Kind(REGRESSION, regression=True, answer="score"),
    TOKEN: Kind(TOKEN, per_token=True, auto_model="AutoModelForTokenClassification", answer="entities"),
}


def is_pair(kind: Kind, text_pair_field: str | None) -> bool:
    """Two texts per input: a pair kind, or a text task trained with a second text field."""
    return kind.pair or (text_pair_field is not None and not kind.per_token)


def kind_of(name: "str | Kind") -> Kind:
    """A kind from its name, as manifests record it (a Kind is returned as it is)."""
    if isinstance(name, Kind):
        return name
    try:
        return KIND_SPECS[name]
    except KeyError:
        raise TaskError(f"unknown task kind {name!r}: choose one of {', '.join(KIND_SPECS)}") from None

SPLITS = ("train", "dev", "test")
IGNORE_INDEX = -100  # label of NER positions not scored: sub-tokens after a word's first, special tokens


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

    def with_fields(self, text_field=None, text_pair_field=None, label_field=None) -> "Task":
        """Generic tasks only: the user names the fields of their own files."""
        if not self.configurable:
            if text_field or text_pair_field or label_field:
                raise TaskError(
                    f"task '{self.name}' has fixed fields; --text-field/--text-pair-field/--label-field "
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
