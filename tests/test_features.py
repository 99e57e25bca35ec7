"""Examples -> model inputs: pairs, NER label alignment, truncation counts, dynamic padding."""

from __future__ import annotations

from tft.data.dataset import load_dataset
from tft.data.features import IGNORE_INDEX, encode, make_collator
from tft.data.readers import TextExample, TokenExample
from tft.tasks import get_task


def test_pair_features_have_segment_ids(afqmc_dir, tokenizer):
    ds = load_dataset(get_task("afqmc"), afqmc_dir, ("train",))
    enc = encode(ds["train"].examples, tokenizer, 64, ds.labels, "pair_classification")
    feat = enc.features[0]
    text, pair = "花呗怎么还款", "花呗如何还款"
    # [CLS] text [SEP] pair [SEP]; one token per CJK character (如/何 are out of vocab -> [UNK])
    assert len(feat["input_ids"]) == len(text) + len(pair) + 3
    assert feat["token_type_ids"] == [0] * (len(text) + 2) + [1] * (len(pair) + 1)
    assert feat["labels"] == 1 and enc.truncated == 0


def test_truncation_is_counted(tokenizer):
    examples = [TextExample("a", "a " * 100, label="1"), TextExample("b", "good", label="0")]
    enc = encode(examples, tokenizer, 16, ("0", "1"), "sequence_classification")
    assert [len(f["input_ids"]) for f in enc.features] == [16, 3]
    assert enc.truncated == 1


def test_ner_first_subtoken_labelled_rest_ignored(tokenizer):
    # "johnx" splits into john + ##x: the second piece is ignored
    ex = TokenExample("0", ["johnx", "lives", "in", "paris"], ["B-PER", "O", "O", "B-LOC"])
    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    feat = encode([ex], tokenizer, 32, labels, "token_classification").features[0]
    ids = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    assert ids == ["[CLS]", "john", "##x", "lives", "in", "paris", "[SEP]"]
    assert feat["labels"] == [IGNORE_INDEX, 1, IGNORE_INDEX, 0, 0, 3, IGNORE_INDEX]


def test_chinese_ner_char_alignment(cluener_dir, tokenizer):
    ds = load_dataset(get_task("cluener"), cluener_dir, ("train",))
    ex = ds["train"].examples[0]
    feat = encode([ex], tokenizer, 64, ds.labels, "token_classification").features[0]
    tags = [ds.labels[i] for i in feat["labels"][1:-1]]
    assert tags == ex.tags


def test_dynamic_padding_pads_to_longest_in_batch(tokenizer):
    examples = [TextExample("a", "good"), TextExample("b", "good bad movie")]
    feats = encode(examples, tokenizer, 64, ("0", "1"), "sequence_classification").features
    batch = make_collator(tokenizer, token_task=False)(feats)
    assert tuple(batch["input_ids"].shape) == (2, 5)
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    ner = [TokenExample("a", ["good"], ["O"]), TokenExample("b", ["good", "bad", "movie"], ["O", "O", "O"])]
    feats = encode(ner, tokenizer, 64, ("O",), "token_classification").features
    batch = make_collator(tokenizer, token_task=True)(feats)
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_tokenizer_json_padding_settings_do_not_leak(tokenizer):
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(length=50)
    try:
        feat = encode([TextExample("a", "good")], tokenizer, 64, ("0",), "sequence_classification").features[0]
        assert len(feat["input_ids"]) == 3
        assert backend.padding["length"] == 50
    finally:
        backend.no_padding()
