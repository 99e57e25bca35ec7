"""The torch modules of the cnn/lstm/gru heads (tft/heads.py has their options and the loader)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tft.errors import TftError
from tft.heads import HEAD_KEY, HeadSpec, head_of
from tft.tasks import Kind


class TextCNN(nn.Module):
    """Convolutions of several widths over the token states (zeros at padding): per-token features for NER, and a
    max over each row's windows that touch a real token for classification."""

    def __init__(self, width: int, spec: HeadSpec):
        super().__init__()
        self.sizes = spec.filter_sizes
        self.convs = nn.ModuleList(nn.Conv1d(width, spec.filters, k, padding=k - 1) for k in self.sizes)
        self.out_features = spec.filters * len(self.sizes)

    def forward(self, states, mask, per_token: bool):
        x = (states * mask.unsqueeze(-1).to(states.dtype)).transpose(1, 2)  # (batch, width, length)
        length = states.shape[1]
        feats = []
        for k, conv in zip(self.sizes, self.convs):
            y = torch.relu(conv(x))  # output t covers tokens t-k+1 .. t
            if per_token:
                feats.append(y[:, :, k // 2:k // 2 + length].transpose(1, 2))
            else:
                touches = nn.functional.conv1d(mask.to(states.dtype).unsqueeze(1), torch.ones_like(conv.weight[:1, :1]),
                                               padding=k - 1) > 0
                feats.append(y.masked_fill(~touches, torch.finfo(y.dtype).min).amax(dim=-1))
        return torch.cat(feats, dim=-1)


class Recurrent(nn.Module):
    """A (bi)directional LSTM or GRU over each row's real tokens only. Each direction runs as a one-layer network on
    the row's tokens gathered into reading order (first token first, or last token first), so padding is only ever
    read after a row's tokens, where it changes nothing that is kept."""

    def __init__(self, width: int, spec: HeadSpec):
        super().__init__()
        cell = nn.LSTM if spec.type == "lstm" else nn.GRU
        directions = 2 if spec.bidirectional else 1
        self.layers = nn.ModuleList()
        for i in range(spec.layers):
            size = width if i == 0 else spec.hidden * directions
            self.layers.append(nn.ModuleList(cell(size, spec.hidden, batch_first=True) for _ in range(directions)))
        self.dropout = nn.Dropout(spec.dropout if spec.layers > 1 else 0.0)
        self.out_features = spec.hidden * directions

    def forward(self, states, mask, per_token: bool):
        mask = mask.long()
        lengths = mask.sum(1, keepdim=True)  # (batch, 1)
        columns = torch.cumsum(torch.ones_like(mask), 1) - 1  # 0..length-1 per row, traced as a dynamic shape
        first = (mask * (columns.max() + 1 - columns)).argmax(1, keepdim=True)  # a row's first real column
        last_col = columns[:, -1:]
        forward_order = torch.minimum(first + columns, last_col)  # reading step t -> column
        backward_order = torch.where(columns < lengths, first + lengths - 1 - columns, last_col)
        # column -> reading step, for giving each token its own outputs back
        forward_step = (columns - first).clamp(min=0)
        backward_step = (first + lengths - 1 - columns).clamp(min=0)
        x = states
        for i, directions in enumerate(self.layers):
            outs = []
            for d, rnn in enumerate(directions):
                order, step = (forward_order, forward_step) if d == 0 else (backward_order, backward_step)
                run, _ = rnn(_gather(x, order))
                outs.append(_gather(run, step.clamp(max=run.shape[1] - 1)))
            x = torch.cat(outs, dim=-1)
            if i < len(self.layers) - 1:
                x = self.dropout(x)
        if per_token:
            return x
        # the final state of each direction: the forward run at the row's last token, the backward at its first
        half = x.shape[-1] // len(self.layers[-1])
        at_last = _gather(x, first + lengths - 1)[:, 0, :half]
        if len(self.layers[-1]) == 1:
            return at_last
        return torch.cat([at_last, _gather(x, first)[:, 0, half:]], dim=-1)


def _gather(x, index):
    """x[b, index[b, t], :] for every b, t."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class EncoderWithHead(nn.Module):
    """An encoder (transformers' AutoModel) and a cnn/lstm/gru head; forward() answers like transformers' own
    ...ForSequenceClassification / ...ForTokenClassification (`.logits`, `.loss` with labels)."""

    def __init__(self, encoder, spec: HeadSpec, num_labels: int, kind: Kind):
        super().__init__()
        self.encoder, self.spec, self.kind, self.per_token = encoder, spec, kind, kind.per_token
        self.config = encoder.config  # what the Trainer and the exporters read
        width = encoder.config.hidden_size if hasattr(encoder.config, "hidden_size") else encoder.config.d_model
        self.head = TextCNN(width, spec) if spec.type == "cnn" else Recurrent(width, spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(self.head.out_features, num_labels)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        states = self.encoder(**inputs).last_hidden_state
        logits = self.classifier(self.dropout(self.head(states, attention_mask, self.per_token)))
        loss = None
        if labels is not None:
            loss = self.kind.loss(logits, labels)  # the loss transformers' own head uses for this kind
        cls = TokenClassifierOutput if self.per_token else SequenceClassifierOutput
        return cls(loss=loss, logits=logits)

    def save_config(self, folder: Path) -> None:
        """config.json: the encoder's, with the head (what `load_trained` rebuilds the model from)."""
        setattr(self.config, HEAD_KEY, self.spec.to_dict())
        self.config.save_pretrained(folder)


def with_head(encoder, spec: HeadSpec, kind) -> EncoderWithHead:
    return EncoderWithHead(encoder, spec, encoder.config.num_labels, kind)


def load_trained(checkpoint, kind, **model_kwargs):
    """A trained checkpoint in eval mode: the family's own head through transformers, or a tft head rebuilt from
    config.json and model.safetensors (strictly: every weight present, none left over)."""
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(checkpoint)
    spec = head_of(config)
    if spec is None:
        return getattr(transformers, kind.auto_model).from_pretrained(checkpoint, **model_kwargs).eval()
    model = with_head(AutoModel.from_config(config, **model_kwargs), spec, kind)
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.exists():
        raise TftError(f"{checkpoint}: no model.safetensors beside the {spec.type} head's config.json")
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()
