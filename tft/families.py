"""One description per model family: everything training, export, serving and the Triton tokenizer step must
know about an encoder that its config and tokenizer do not say plainly (in the spirit of optimum's per-architecture
ONNX configs). Adding a family is one entry in FAMILIES; nothing else in tft compares family names (a test
enforces it).

    family_of(model_type)            the description (an unknown type falls back, with one line saying so)
    usable_positions(family, cfg)    how many tokens the model takes (None: relative positions, no table)

Torch-free: the export manifest and the served steps read what these entries decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tft.predictions import MODEL_INPUTS

log = logging.getLogger("tft")

# Ops kept in fp32 inside an fp16 graph: normalisations and exponentials overflow or lose their sums in fp16, and a
# recurrent head (--head lstm/gru) carries its rounding from step to step (logits 0.011 away on a tiny model).
FP16_KEEP_FP32 = ("LayerNormalization", "SimplifiedLayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf",
                  "LSTM", "GRU")


@dataclass(frozen=True)
class Family:
    """What one encoder family needs, field by field; the defaults are BERT's."""

    model_type: str  # transformers' config.model_type
    # its forward() takes token_type_ids (export keeps the input only then, whatever the tokenizer makes)
    token_type_ids: bool = True
    # position table entries before the first usable one: "pad+1" where position ids start after the padding index
    # (RoBERTa's create_position_ids_from_input_ids), 0 where they start at 0, None for relative positions (no table:
    # --max-seq-length is the only limit)
    position_offset: int | str | None = 0
    # where the token the classifier reads sits: "first" ([CLS] first) or "last" (XLNet's <cls> ends every input)
    pooled_token: str = "first"
    # ONNX Runtime transformer optimizer model_type; None: the plain graph is served (no fusion recipe fits)
    optimizer_type: str | None = "bert"
    # the smallest ONNX opset its exported graph needs (17 keeps LayerNormalization one op for TensorRT fp16)
    min_opset: int = 17
    fp16_keep_fp32: tuple[str, ...] = FP16_KEEP_FP32
    # config values set before training and export (e.g. XLNet's memory off: it would become a graph output)
    config_overrides: dict = field(default_factory=dict)
    known: bool = True  # False for the fallback made for a model type without an entry

    @property
    def padding_side(self) -> str:
        """A model that reads its last token must be padded on the left, or it would read padding."""
        return "left" if self.pooled_token == "last" else "right"

    @property
    def relative_positions(self) -> bool:
        return self.position_offset is None


FAMILIES = {f.model_type: f for f in (
    Family("bert"),
    Family("roberta", token_type_ids=False, position_offset="pad+1"),
    Family("xlm-roberta", token_type_ids=False, position_offset="pad+1"),
    Family("camembert", token_type_ids=False, position_offset="pad+1"),
    Family("distilbert", token_type_ids=False),
    Family("albert"),
    Family("electra"),
    Family("ernie"),
    Family("megatron-bert"),
    # relative attention (position buckets) but an absolute table only if position_biased_input: the config's
    # max_position_embeddings is still the limit the model was trained with
    Family("deberta-v2", optimizer_type=None),
    Family("deberta", optimizer_type=None),
    # relative positions (no length limit but --max-seq-length); <cls> ends every input, so it pads on the left
    Family("xlnet", position_offset=None, pooled_token="last", optimizer_type=None,
           config_overrides={"use_mems_eval": False, "use_mems_train": False}),
    Family("modernbert", token_type_ids=False, optimizer_type=None),
    # its relative-position buckets come from a Log of distances: in fp16 a distance near a bucket edge lands in
    # the next bucket (logits 0.04 away on a tiny model), so that arithmetic stays fp32
    Family("mpnet", token_type_ids=False, position_offset="pad+1", optimizer_type=None,
           fp16_keep_fp32=FP16_KEEP_FP32 + ("Log", "Div")),
)}


def family_of(model_type: str | None, quiet: bool = False) -> Family:
    """The family's description; an unknown model type gets the safe fallback (inputs as its tokenizer makes them,
    positions as its config says, right padding, no graph fusions), with one line saying so."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if not quiet:
        log.warning("model type '%s' has no family description in tft: using what its config and tokenizer say "
                    "(right padding, first-token pooling, no ONNX Runtime fusions)", model_type)
    return Family(str(model_type), optimizer_type=None, known=False)


def usable_positions(family: Family, config) -> int | None:
    """Token positions a model can take: its position table less the entries it reserves; None without a limit."""
    if family.relative_positions:
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or positions <= 0:
        return None
    if family.position_offset == "pad+1":
        pad = getattr(config, "pad_token_id", None)
        return positions - ((1 if pad is None else pad) + 1)
    return positions - int(family.position_offset or 0)


def input_names(family: Family, tokenizer_inputs) -> tuple[str, ...]:
    """The model inputs in forward() order: what the tokenizer makes, less what the family's forward() lacks."""
    wanted = [n for n in MODEL_INPUTS if n in tokenizer_inputs]
    if not family.token_type_ids:
        wanted = [n for n in wanted if n != "token_type_ids"]
    return tuple(wanted)
