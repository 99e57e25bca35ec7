"""`--model scratch:tiny`: a small randomly initialised BERT and a WordPiece tokenizer trained on the
task's own training texts, so demos and smoke tests run with no model hub. Smoke-test quality only."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SIZES = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}


def is_scratch(name: str | None) -> bool:
    return bool(name) and name.startswith("scratch:")


def train_tokenizer(texts, vocab_size: int = 8000, max_length: int = 512):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    from tft.console import on_terminal

    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=1,
                               show_progress=on_terminal())
    tok.train_from_iterator(texts, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def scratch_size(name: str) -> str:
    """The size in `scratch:<size>`; one line for an unknown one (checked before the run folder is touched)."""
    size = name.split(":", 1)[1]
    if size not in SIZES:
        from tft.errors import TftError

        raise TftError(f"unknown scratch model '{name}'; choose one of {', '.join('scratch:' + s for s in SIZES)}")
    return size


def scratch_config(name: str, tokenizer, max_length: int):
    from transformers import BertConfig

    size = scratch_size(name)
    return BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, max_length),
                      pad_token_id=tokenizer.pad_token_id, **SIZES[size])


def texts_of(examples, max_chars: int | None = None) -> list[str]:
    """The texts a scratch tokenizer learns from, each cut at `max_chars` as training and serving cut them (a 200 MB
    line would otherwise cost the tokenizer trainer tens of GB)."""
    out = []
    for ex in examples:
        if hasattr(ex, "tokens"):
            out.append(" ".join(ex.tokens))
        else:
            out.append(ex.text)
            if ex.text_pair:
                out.append(ex.text_pair)
    return [t[:max_chars] for t in out] if max_chars else out
