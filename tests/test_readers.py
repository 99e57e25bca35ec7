"""Each reader on well-formed input (counts, labels, pair fields, BIO) and on bad input
(one error naming the file and line)."""

from __future__ import annotations

import json

import pytest

from helpers import CONLL_TRAIN, write
from tft.data.dataset import load_dataset
from tft.errors import DataError
from tft.tasks import get_task


# --- well-formed input ------------------------------------------------------------------------------

def test_afqmc_pairs_labels_and_unlabelled_test(afqmc_dir):
    ds = load_dataset(get_task("afqmc"), afqmc_dir, ("train", "dev", "test"))
    assert [len(ds[s].examples) for s in ("train", "dev", "test")] == [3, 2, 2]
    first = ds["train"].examples[0]
    assert (first.text, first.text_pair, first.label) == ("花呗怎么还款", "花呗如何还款", "1")
    assert ds.labels == ("0", "1")
    assert ds["test"].examples[1].guid == "1" and ds["test"].examples[1].label is None
    assert not ds["test"].labeled and ds["dev"].labeled


def test_integer_labels_equal_string_labels(tmp_path):
    d = tmp_path / "d"
    write(d / "train.json", [{"sentence1": "a", "sentence2": "b", "label": 1},
                             {"sentence1": "c", "sentence2": "d", "label": "0"}])
    ds = load_dataset(get_task("afqmc"), d, ("train",))
    assert [ex.label for ex in ds["train"].examples] == ["1", "0"]


def test_tnews_uses_label_desc(tmp_path):
    d = tmp_path / "tnews"
    write(d / "train.json", [{"label": "104", "label_desc": "news_finance", "sentence": "股市", "keywords": ""}])
    ds = load_dataset(get_task("tnews"), d, ("train",))
    assert ds["train"].examples[0].label == "news_finance"
    assert len(ds.labels) == 15


def test_iflytek_labels_read_from_train_in_numeric_order(tmp_path):
    d = tmp_path / "iflytek"
    write(d / "train.json", [{"label": str(i), "label_des": "x", "sentence": f"s{i}"} for i in (10, 2, 1)])
    write(d / "dev.json", [{"label": "2", "label_des": "x", "sentence": "t"}])
    ds = load_dataset(get_task("iflytek"), d, ("train", "dev"))
    assert ds.labels == ("1", "2", "10")
    assert ds["dev"].warnings["label '1' never occurs in dev"] == 1


def test_cmnli_skips_examples_without_gold_label(tmp_path):
    d = tmp_path / "cmnli"
    write(d / "dev.json", [{"sentence1": "a", "sentence2": "b", "label": "neutral"},
                           {"sentence1": "c", "sentence2": "d", "label": "-"}])
    ds = load_dataset(get_task("cmnli"), d, ("dev",))
    assert len(ds["dev"].examples) == 1
    assert sum(ds["dev"].warnings.values()) >= 1


def test_glue_tsv_ignores_quotes_and_reads_header_columns(tmp_path):
    d = tmp_path / "sst2"
    write(d / "train.tsv", 'sentence\tlabel\nit \'s "great" , really \t1\n"unbalanced quote\t0\n')
    write(d / "test.tsv", "index\tsentence\n0\tsome text\n1\tother\n")
    ds = load_dataset(get_task("sst2"), d, ("train", "test"))
    assert [ex.text for ex in ds["train"].examples] == ['it \'s "great" , really', '"unbalanced quote']
    assert [ex.label for ex in ds["train"].examples] == ["1", "0"]
    assert [ex.guid for ex in ds["test"].examples] == ["0", "1"]


def test_mrpc_and_stsb_columns(tmp_path):
    d = tmp_path / "mrpc"
    write(d / "train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said.\tHe stated.\n")
    ex = load_dataset(get_task("mrpc"), d, ("train",))["train"].examples[0]
    assert (ex.text, ex.text_pair, ex.label) == ("He said.", "He stated.", "1")
    d = tmp_path / "stsb"
    write(d / "train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                           "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn air plane.\t5.000\n")
    ds = load_dataset(get_task("stsb"), d, ("train",))
    assert ds["train"].examples[0].label == 5.0 and ds.labels == ()


def test_thucnews_csv_with_quoted_commas(tmp_path):
    d = tmp_path / "thucnews"
    write(d / "train.csv", 'label,text\n体育,"北京, 上海"\n财经,股市\r\n')
    ds = load_dataset(get_task("thucnews"), d, ("train",))
    assert [(e.label, e.text) for e in ds["train"].examples] == [("体育", "北京, 上海"), ("财经", "股市")]
    assert ds.labels == ("体育", "财经")


def test_generic_csv_and_jsonl_field_options(tmp_path):
    d = tmp_path / "gen"
    write(d / "train.csv", "q,a,y\nhello,world,yes\nfoo,bar,no\n")
    task = get_task("csv").with_fields("q", "a", "y")
    ds = load_dataset(task, d, ("train",))
    assert task.kind.name == "pair_classification" and task.kind.pair
    assert (ds["train"].examples[0].text_pair, ds.labels) == ("world", ("no", "yes"))
    write(d / "train.jsonl", [{"body": "x", "tag": "p"}, {"body": "y", "tag": "n"}])
    ds = load_dataset(get_task("jsonl").with_fields("body", None, "tag"), d, ("train",))
    assert [e.text for e in ds["train"].examples] == ["x", "y"]


def test_fixed_task_refuses_field_options():
    with pytest.raises(Exception, match="fixed fields"):
        get_task("afqmc").with_fields("a")


def test_conll2003_docstart_sentences_and_iob1_to_bio(tmp_path):
    d = tmp_path / "conll"
    write(d / "train.txt", CONLL_TRAIN)
    ds = load_dataset(get_task("conll2003"), d, ("train",))
    sents = ds["train"].examples
    assert [s.tokens for s in sents] == [["John", "Smith", "lives", "in", "Paris", "."], ["Acme", "works"]]
    assert sents[0].tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert sents[1].tags == ["B-ORG", "O"]
    assert not ds["train"].warnings  # IOB1 is the format, not a defect
    assert ds.labels[0] == "O" and "B-MISC" in ds.labels


def test_bio_orphan_i_repaired_with_warning(tmp_path):
    d = tmp_path / "bio"
    write(d / "train.txt", "a I-X\nb I-X\nc O\nd I-Y\n\ne B-X\n")
    ds = load_dataset(get_task("bio"), d, ("train",))
    assert ds["train"].examples[0].tags == ["B-X", "I-X", "O", "B-Y"]
    assert ds["train"].warnings["orphan I- tags repaired to B-"] == 2
    assert ds.labels == ("O", "B-X", "I-X", "B-Y", "I-Y")


def test_peoples_daily_char_per_line(tmp_path):
    d = tmp_path / "pd"
    write(d / "example.train", "张 B-PER\n三 I-PER\n在 O\n北 B-LOC\n京 I-LOC\n\n中 B-ORG\n国 I-ORG\n")
    ds = load_dataset(get_task("peoples_daily"), d, ("train",))
    assert "".join(ds["train"].examples[0].tokens) == "张三在北京"
    assert ds["train"].examples[0].tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]


def test_cluener_spans_to_bio_match_span_text(cluener_dir):
    ds = load_dataset(get_task("cluener"), cluener_dir, ("train", "dev", "test"))
    ex = ds["train"].examples[0]
    assert ex.tags == ["B-name", "I-name", "O", "B-organization", "I-organization", "I-organization", "I-organization"]
    # every B..I run reads back the entity text of its span
    record = json.loads((cluener_dir / "train.json").read_text(encoding="utf-8").splitlines()[0])
    for etype, entities in record["label"].items():
        for entity, spans in entities.items():
            for start, end in spans:
                assert ex.text[start:end + 1] == entity
                assert ex.tags[start] == f"B-{etype}" and all(t == f"I-{etype}" for t in ex.tags[start + 1:end + 1])
    assert ds["test"].examples[0].tags is None and ds["test"].examples[0].guid == "0"


def test_crlf_and_bom_are_tolerated(tmp_path):
    d = tmp_path / "afqmc"
    line = json.dumps({"sentence1": "a", "sentence2": "b", "label": "1"})
    write(d / "train.json", ("\ufeff" + line + "\r\n" + line + "\r\n").encode("utf-8"))
    assert len(load_dataset(get_task("afqmc"), d, ("train",))["train"].examples) == 2


def test_duplicate_examples_warn(tmp_path):
    d = tmp_path / "afqmc"
    row = {"sentence1": "a", "sentence2": "b", "label": "1"}
    write(d / "train.json", [row, row, row])
    assert load_dataset(get_task("afqmc"), d, ("train",))["train"].warnings["duplicate examples"] == 2


# --- bad input: one error naming file and line -------------------------------------------------------

BAD_JSON_CASES = [
    ("malformed", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n{"sentence1": "a",\n', 2, "malformed JSON"),
    ("missing field", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n{"sentence1": "a", "label": "1"}\n', 2,
     "missing field 'sentence2'"),
    ("unknown label", '{"sentence1": "a", "sentence2": "b", "label": "7"}\n', 1, "unknown label '7'"),
    ("not object", '[1, 2]\n', 1, "expected a JSON object"),
    ("text not string", '{"sentence1": 5, "sentence2": "b", "label": "1"}\n', 1, "must be a string"),
    ("bad label type", '{"sentence1": "a", "sentence2": "b", "label": [1]}\n', 1, "invalid label"),
    ("deep nesting", '{"sentence1": ' + "[" * 200 + "]" * 200 + "}\n", 1, "nested deeper"),
]


@pytest.mark.parametrize("name,content,line,message", BAD_JSON_CASES, ids=[c[0] for c in BAD_JSON_CASES])
def test_bad_json_lines(tmp_path, name, content, line, message):
    d = tmp_path / "afqmc"
    path = write(d / "train.json", content)
    with pytest.raises(DataError) as err:
        load_dataset(get_task("afqmc"), d, ("train",))
    assert str(err.value.message).startswith(f"{path}:{line}: ")
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_empty_file_and_empty_split(tmp_path):
    d = tmp_path / "afqmc"
    path = write(d / "train.json", "")
    with pytest.raises(DataError, match="file is empty") as err:
        load_dataset(get_task("afqmc"), d, ("train",))
    assert err.value.message.startswith(str(path))
    write(d / "train.json", "-DOCSTART- O\n\n")
    write(tmp_path / "c" / "train.txt", "-DOCSTART- -X- O\n\n\n")
    with pytest.raises(DataError, match="no examples in the train split"):
        load_dataset(get_task("conll2003"), tmp_path / "c", ("train",))


# (id, task, split, file, content, the error's message, its line)
FILE_ERRORS = [
    ("non-utf8", "afqmc", "train", "train.json",
     json.dumps({"sentence1": "a", "sentence2": "b", "label": "1"}).encode() + b"\n" + '{"sentence1": "花"}'.encode("gbk")
     + b"\n", "not valid UTF-8", 2),
    ("duplicate ids", "afqmc", "test", "test.json",
     [{"id": 1, "sentence1": "a", "sentence2": "b"}, {"id": 1, "sentence1": "c", "sentence2": "d"}],
     "duplicate id 1 (first seen at line 1)", 2),
    ("bio column count", "conll2003", "train", "train.txt", "John NNP B-NP B-PER\nSmith NNP I-PER\n",
     "expected 4 columns as on the first line, found 3", 2),
    ("bio invalid tag", "conll2003", "train", "train.txt", "John B-PER\nSmith X-PER\n", "invalid tag 'X-PER'", 2),
    ("bio unknown type", "conll2003", "train", "train.txt", "John B-PER\n\nAcme B-COMPANY\n",
     "unknown entity type in tag 'B-COMPANY'", 3),
    ("tsv columns", "sst2", "train", "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n",
     "expected 2 tab-separated columns", 3),
    ("regression label", "stsb", "train", "train.tsv", "sentence1\tsentence2\tscore\na\tb\thigh\n",
     "must be a number", 2),
]


@pytest.mark.parametrize("task,split,name,content,message,line", [c[1:] for c in FILE_ERRORS],
                         ids=[c[0] for c in FILE_ERRORS])
def test_file_errors_name_the_file_and_line(tmp_path, task, split, name, content, message, line):
    path = write(tmp_path / task / name, content)
    with pytest.raises(DataError) as err:
        load_dataset(get_task(task), tmp_path / task, (split,))
    assert message in err.value.message and err.value.message.startswith(f"{path}:{line}:")


def test_missing_split_file_names_expected_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="file not found.*train.json"):
        load_dataset(get_task("afqmc"), tmp_path / "empty", ("train",))


@pytest.mark.parametrize("label,message", [
    ({"name": {"张三": [[0, 9]]}}, "outside the text"),
    ({"name": {"张三": [[-1, 1]]}}, "outside the text"),
    ({"name": {"李四": [[0, 1]]}}, "reads '张三', not '李四'"),
    ({"name": {"张三": [[0]]}}, "must be [start, end] integers"),
    (["bad"], "must be an object"),
])
def test_cluener_bad_spans(tmp_path, label, message):
    d = tmp_path / "cluener"
    path = write(d / "train.json", [{"text": "张三在北京", "label": {}}, {"text": "张三在北京", "label": label}])
    with pytest.raises(DataError) as err:
        load_dataset(get_task("cluener"), d, ("train",))
    assert message in err.value.message and err.value.message.startswith(f"{path}:2:")




@pytest.mark.parametrize("task,name,line", [
    ("afqmc", "train.json", '{"sentence1": "a", "sentence2": "b", "label": null}'),
    ("jsonl", "train.jsonl", '{"text": "a", "label": null}'),
])
def test_a_null_label_is_one_line_at_its_line(tmp_path, task, name, line):
    """It used to read as an unlabelled example: `data check` passed, training died with an internal error."""
    from tft.data.dataset import load_dataset
    from tft.errors import DataError
    from tft.tasks import get_task

    write(tmp_path / name, '{"sentence1": "a", "sentence2": "c", "text": "c", "label": "1"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"{name}:2: field 'label' is null"):
        load_dataset(get_task(task), tmp_path, ("train",))


def test_the_generated_sentiment_sample_reads_as_sst2_and_is_balanced(tmp_path):
    """`tft data sample --task sst2`: GLUE's TSV layout, both classes, what the family matrix learns on a clone with
    nothing beside it."""
    from tft.data.cli import SAMPLE_TASKS
    from tft.data.dataset import load_dataset
    from tft.data.synthetic import SAMPLE_TASKS as WRITERS, write_sample
    from tft.tasks import get_task

    assert set(SAMPLE_TASKS) == set(WRITERS)
    folder = write_sample("sst2", tmp_path / "sst2", train=200, dev=40, test=5)
    ds = load_dataset(get_task("sst2"), folder, ("train", "dev", "test"))
    labels = [ex.label for ex in ds["train"].examples]
    assert labels.count("0") == labels.count("1") == 100 and not ds["test"].labeled
    assert len(ds["test"].examples) == 5 and ds.labels == ("0", "1")
    negated = [ex for ex in ds["train"].examples if " not " in f" {ex.text} "]
    assert negated and {ex.label for ex in negated} == {"0", "1"}  # "not" alone never gives the answer away


def test_data_shapes_users_bring_are_read_or_named_at_their_line(tmp_path):
    """A header naming a column twice, Excel's `sep=` line, a semicolon CSV, a cell over csv's 131,072-character
    default, and a missing field that names the header it found."""
    task = get_task("csv")
    write(tmp_path / "dup" / "train.csv", "text,label,text\nhello,1,world\n")
    with pytest.raises(DataError, match=r"train.csv:1: the header names 'text' twice \(columns 1 and 3"):
        load_dataset(task, tmp_path / "dup", ("train",))
    write(tmp_path / "dupt" / "train.tsv", "sentence\tlabel\tsentence\nx\t1\ty\n")
    with pytest.raises(DataError, match=r"train.tsv:1: the header names 'sentence' twice"):
        load_dataset(get_task("sst2"), tmp_path / "dupt", ("train",))
    write(tmp_path / "excel" / "train.csv", "sep=;\ntext;label\nbonjour, le monde;1\nau revoir;0\n")
    ds = load_dataset(task, tmp_path / "excel", ("train",))
    assert [e.text for e in ds["train"].examples] == ["bonjour, le monde", "au revoir"]
    write(tmp_path / "semi" / "train.csv", "text;label\nguten tag;1\ntschuess;0\n")
    assert len(load_dataset(task, tmp_path / "semi", ("train",))["train"].examples) == 2
    long = "a" * 200_000
    write(tmp_path / "long" / "train.csv", f'text,label\n"{long}",1\nshort,0\n')
    assert len(load_dataset(task, tmp_path / "long", ("train",))["train"].examples[0].text) == 200_000
    write(tmp_path / "other" / "train.csv", "sentence,label\nhi,1\n")
    with pytest.raises(DataError, match=r"train.csv:2: missing field 'text' \(the fields here: 'sentence', 'label'\)"):
        load_dataset(task, tmp_path / "other", ("train",))


def test_a_head_dropout_of_one_is_refused():
    from tft.errors import TftError
    from tft.train.config import merge

    with pytest.raises(TftError, match=r"--head-dropout 1(\.0)?: must be below 1"):
        merge({}, {"task": "sst2", "head": "cnn", "head_dropout": 1.0})
    assert merge({}, {"task": "sst2", "head_dropout": 0.99}).head_dropout == 0.99


def test_the_scratch_tokenizer_learns_from_capped_texts():
    from tft.data.readers import TextExample
    from tft.train.scratch import texts_of

    examples = [TextExample("1", "x" * 10_000, "y" * 50, "1", 1)]
    assert [len(t) for t in texts_of(examples, 4096)] == [4096, 50]
