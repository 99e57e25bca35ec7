"""Tiny encoders of eleven model families, built locally from their configs (random weights), each with a
tokenizer of its real kind trained on the texts it will see: WordPiece, byte-level BPE, or Unigram with a
metaspace pre-tokenizer (SentencePiece-style). Nothing is downloaded. The saved folders look like what users
bring from the hub: config.json, model.safetensors, tokenizer.json and tokenizer_config.json naming the
family's own tokenizer class."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>", "cls": "<s>",
                    "sep": "</s>"}
XLNET_SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "cls": "<cls>", "sep": "<sep>", "pad": "<pad>",
                  "mask": "<mask>"}
ALBERT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
DEBERTA_SPECIALS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
MPNET_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "[UNK]", "mask": "<mask>", "cls": "<s>",
                  "sep": "</s>"}


@dataclass(frozen=True)
class TinyFamily:
    model_type: str
    tokenizer_kind: str  # wordpiece | bpe (byte-level) | unigram (metaspace)
    tokenizer_class: str  # what the hub's tokenizer_config.json names
    specials: dict
    template: str  # bert | roberta | xlnet
    config: dict = field(default_factory=dict)


SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
FAMILIES = {
    "bert": TinyFamily("bert", "wordpiece", "BertTokenizer", BERT_SPECIALS, "bert", dict(SMALL)),
    "roberta": TinyFamily("roberta", "bpe", "RobertaTokenizer", ROBERTA_SPECIALS, "roberta", dict(SMALL)),
    "xlm-roberta": TinyFamily("xlm-roberta", "unigram", "XLMRobertaTokenizer", ROBERTA_SPECIALS, "roberta",
                              dict(SMALL)),
    "distilbert": TinyFamily("distilbert", "wordpiece", "DistilBertTokenizer", BERT_SPECIALS, "bert",
                             dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
    "albert": TinyFamily("albert", "unigram", "AlbertTokenizer", ALBERT_SPECIALS, "bert",
                         dict(SMALL, embedding_size=16)),
    "electra": TinyFamily("electra", "wordpiece", "ElectraTokenizer", BERT_SPECIALS, "bert",
                          dict(SMALL, embedding_size=32)),
    "ernie": TinyFamily("ernie", "wordpiece", "BertTokenizer", BERT_SPECIALS, "bert", dict(SMALL)),
    "deberta-v2": TinyFamily("deberta-v2", "unigram", "DebertaV2Tokenizer", DEBERTA_SPECIALS, "bert",
                             dict(SMALL, max_relative_positions=64, position_buckets=32, relative_attention=True,
                                  pos_att_type=["p2c", "c2p"])),
    "xlnet": TinyFamily("xlnet", "unigram", "XLNetTokenizer", XLNET_SPECIALS, "xlnet",
                        dict(d_model=32, n_layer=2, n_head=2, d_inner=64)),
    "modernbert": TinyFamily("modernbert", "bpe", "PreTrainedTokenizerFast", BERT_SPECIALS, "bert",
                             dict(SMALL, global_attn_every_n_layers=2, local_attention=16)),
    "mpnet": TinyFamily("mpnet", "wordpiece", "MPNetTokenizer", MPNET_SPECIALS, "roberta", dict(SMALL)),
}


# Families with no entry in tft/families.py: what a user brings that tft was never told about. Each trains, exports,
# serves and verifies through the fallback family and what preflight learns, or is refused by preflight in one line
# (tests/test_preflight.py says which, and why).
OUTSIDE = {
    "convbert": TinyFamily("convbert", "wordpiece", "ConvBertTokenizer", BERT_SPECIALS, "bert",
                           dict(SMALL, embedding_size=32, head_ratio=1, conv_kernel_size=3)),
    "layoutlm": TinyFamily("layoutlm", "wordpiece", "LayoutLMTokenizer", BERT_SPECIALS, "bert", dict(SMALL)),
    "squeezebert": TinyFamily("squeezebert", "wordpiece", "SqueezeBertTokenizer", BERT_SPECIALS, "bert",
                              dict(SMALL, embedding_size=32, q_groups=2, k_groups=2, v_groups=2, post_attention_groups=1,
                                   intermediate_groups=2, output_groups=2)),
    "mobilebert": TinyFamily("mobilebert", "wordpiece", "MobileBertTokenizer", BERT_SPECIALS, "bert",
                             dict(SMALL, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
                                  num_feedforward_networks=1)),
    "roformer": TinyFamily("roformer", "wordpiece", "PreTrainedTokenizerFast", BERT_SPECIALS, "bert",
                           dict(SMALL, embedding_size=32)),
    "rembert": TinyFamily("rembert", "unigram", "RemBertTokenizer", ROBERTA_SPECIALS, "roberta",
                          dict(SMALL, input_embedding_size=32, output_embedding_size=32)),
    "data2vec-text": TinyFamily("data2vec-text", "bpe", "RobertaTokenizer", ROBERTA_SPECIALS, "roberta", dict(SMALL)),
    "big_bird": TinyFamily("big_bird", "unigram", "BigBirdTokenizer", ROBERTA_SPECIALS, "roberta",
                           dict(SMALL, attention_type="original_full")),
    # token mixing by a Fourier transform: no ONNX export
    "fnet": TinyFamily("fnet", "unigram", "FNetTokenizer", ALBERT_SPECIALS, "bert", dict(SMALL)),
    # windowed attention: the exported graph holds the traced length in a Reshape
    "longformer": TinyFamily("longformer", "bpe", "LongformerTokenizer", ROBERTA_SPECIALS, "roberta",
                             dict(SMALL, attention_window=[8, 8])),
    # landmark attention over a fixed number of segments: every batch must be one fixed length
    "nystromformer": TinyFamily("nystromformer", "unigram", "AlbertTokenizer", ALBERT_SPECIALS, "bert",
                                dict(SMALL, segment_means_seq_len=64, num_landmarks=16)),
}
ALL = {**FAMILIES, **OUTSIDE}


def _specials_in_order(fam: TinyFamily) -> list[str]:
    return list(dict.fromkeys(fam.specials.values()))


def train_tokenizer(fam: TinyFamily, texts: list[str], vocab_size: int = 1200) -> Tokenizer:
    specials = _specials_in_order(fam)
    if fam.tokenizer_kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=fam.specials["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    elif fam.tokenizer_kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.Replace("``", '"'), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                          unk_token=fam.specials["unk"])
    tok.train_from_iterator(texts, trainer)
    sp = fam.specials
    ids = {t: tok.token_to_id(t) for t in specials}
    if fam.template == "roberta":
        if fam.tokenizer_kind == "bpe":
            tok.post_processor = processors.RobertaProcessing((sp["sep"], ids[sp["sep"]]), (sp["cls"], ids[sp["cls"]]),
                                                              add_prefix_space=False, trim_offsets=True)
        else:
            tok.post_processor = processors.TemplateProcessing(
                single=f"{sp['cls']} $A {sp['sep']}", pair=f"{sp['cls']} $A {sp['sep']} {sp['sep']} $B {sp['sep']}",
                special_tokens=[(sp["cls"], ids[sp["cls"]]), (sp["sep"], ids[sp["sep"]])])
    elif fam.template == "xlnet":  # <cls> last, with segment id 2, as XLNet's own tokenizer
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {sp['sep']}:0 {sp['cls']}:2", pair=f"$A:0 {sp['sep']}:0 $B:1 {sp['sep']}:1 {sp['cls']}:2",
            special_tokens=[(sp["cls"], ids[sp["cls"]]), (sp["sep"], ids[sp["sep"]])])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{sp['cls']} $A {sp['sep']}", pair=f"{sp['cls']} $A {sp['sep']} $B:1 {sp['sep']}:1",
            special_tokens=[(sp["cls"], ids[sp["cls"]]), (sp["sep"], ids[sp["sep"]])])
    return tok


def build(name: str, texts: list[str], out: Path, max_positions: int = 128) -> Path:
    """Write a tiny model of family `name` with its tokenizer to `out` (like a hub snapshot) and return it."""
    import torch
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    fam = ALL[name]
    tok = train_tokenizer(fam, texts)
    sp = fam.specials
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_positions,
                                   **{f"{k}_token": v for k, v in sp.items()},
                                   **({"padding_side": "left"} if fam.template == "xlnet" else {}))
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text())
    tcfg["tokenizer_class"] = fam.tokenizer_class
    cfg_path.write_text(json.dumps(tcfg, indent=1))
    ids = {k: tok.token_to_id(v) for k, v in sp.items()}
    extra = dict(fam.config)
    if name != "xlnet":
        offset = ids["pad"] + 1 if fam.template == "roberta" else 0
        extra["max_position_embeddings"] = max_positions + offset
    special_ids = {f"{k}_token_id": v for k, v in ids.items() if k in ("pad", "bos", "eos", "cls", "sep")}
    special_ids.setdefault("bos_token_id", ids["cls"])
    special_ids.setdefault("eos_token_id", ids["sep"])
    config = AutoConfig.for_model(name, vocab_size=tok.get_vocab_size(), **extra, **special_ids)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(out)
    return out


FIRST = ["john", "mary", "alice", "peter", "maria", "david", "sarah", "tom", "anna", "james", "linda", "omar"]
LAST = ["smith", "jones", "brown", "garcia", "miller", "davis", "lopez", "wilson", "clark", "lewis"]
ORGS = [["acme"], ["google"], ["the", "united", "nations"], ["general", "motors"], ["red", "cross"], ["ibm"],
        ["bank", "of", "spain"], ["reuters"]]
PLACES = [["paris"], ["london"], ["new", "york"], ["tokyo"], ["berlin"], ["cape", "town"], ["madrid"], ["lima"]]
TEMPLATES = ["{PER} works at {ORG} in {LOC} .", "{PER} flew to {LOC} on monday .", "{ORG} opened an office in {LOC} .",
             "yesterday {PER} met officials of {ORG} .", "in {LOC} , {PER} said {ORG} would grow .",
             "the weather in {LOC} was fine .", "{PER} and {PER} left {ORG} last year ."]


def bio_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """English BIO sentences with people, organisations and places, learnable in a few hundred steps."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = []
        for part in rng.choice(TEMPLATES).split():
            if part in ("{PER}", "{ORG}", "{LOC}"):
                kind = part[1:-1]
                span = ([rng.choice(FIRST), rng.choice(LAST)] if kind == "PER"
                        else rng.choice(ORGS if kind == "ORG" else PLACES))
                words += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(span)]
            else:
                words.append((part, "O"))
        out.append(words)
    return out


def write_bio(folder: Path, train: int = 400, dev: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train, 1), ("dev", dev, 2)):
        blocks = ["\n".join(f"{w} {t}" for w, t in sent) for sent in bio_sentences(n, seed)]
        (folder / f"{split}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return folder
