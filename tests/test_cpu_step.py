"""A CPU training step's speed-ups (tft/train/cpu_step.py): NumPy-drawn dropout masks that are still dropout, and
gradient clipping that is still PyTorch's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from tft.train import cpu_step
from tft.train.cpu_step import FastCpuDropout, fast_dropout_wanted, mask_level


def test_the_probability_is_rounded_to_a_16_bit_level_or_left_to_pytorch():
    assert mask_level(0.1) == 6554  # the probability 6554 / 65536
    assert abs(mask_level(0.1) / 65536 - 0.1) < 1 / 65536
    assert mask_level(0.5) / 65536 == 0.5
    for p in (0.0, 1.0, 1e-7, 1 - 1e-7, 1.5, -0.5):  # exact in PyTorch's own, would round to no (or all) dropout,
        assert mask_level(p) is None                # or PyTorch's to refuse


def test_masks_are_bernoulli_unbiased_and_fixed_by_pytorchs_seed():
    x = torch.ones(2_000_000)
    with FastCpuDropout():
        torch.manual_seed(7)
        a = nn.functional.dropout(x, 0.1, training=True)
        b = nn.functional.dropout(x, 0.1, training=True)
        torch.manual_seed(7)
        again = nn.functional.dropout(x, 0.1, training=True)
    kept = (a != 0).double().mean().item()
    assert abs(kept - (1 - 6554 / 65536)) < 0.001  # binomial sd here: 0.0002
    assert a.unique().tolist() == [0.0, pytest.approx(65536 / (65536 - 6554))]
    assert abs(a.mean().item() - 1.0) < 0.002  # scaled by the rounded probability: no bias
    assert torch.equal(a, again) and not torch.equal(a, b)  # --seed and a checkpoint's generator state fix the masks
    # a mask is not a shifted copy of the last one, nor correlated with it
    assert abs(torch.corrcoef(torch.stack([(a != 0).float(), (b != 0).float()]))[0, 1].item()) < 0.005


def test_dropout_under_the_mode_keeps_pytorchs_contract():
    layer = nn.Dropout(0.25)
    x = torch.randn(64, 300, dtype=torch.bfloat16, requires_grad=True)
    with FastCpuDropout():
        y = layer(x)  # the module form: F.dropout(input, p, training, inplace) through __torch_function__
        y.float().sum().backward()
        assert y.dtype == torch.bfloat16 and y.shape == x.shape
        kept = y != 0
        assert 0.70 < kept.float().mean().item() < 0.80
        assert torch.allclose(y[kept].float(), (x[kept] / 0.75).float(), rtol=1e-2)
        assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept].float(), torch.tensor(1 / 0.75), rtol=1e-2)

        layer.eval()
        assert torch.equal(layer(x), x)  # evaluation: identity
        assert torch.equal(nn.functional.dropout(x, 0.0, training=True), x)
        assert not nn.functional.dropout(x, 1.0, training=True).any()  # p = 1: PyTorch's own, all dropped
        z = torch.ones(1000)
        out = nn.functional.dropout(z, p=0.5, training=True, inplace=True)
        assert out is z and (z == 0).any() and set(z.unique().tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError):
        with FastCpuDropout():
            nn.functional.dropout(torch.ones(3), 1.5, training=True)  # PyTorch's own error for a bad p


def test_the_mode_also_answers_the_attention_functions_own_dropout(monkeypatch):
    """transformers' eager attention calls nn.functional.dropout directly (no module): the mode sees those calls too,
    on a family that is not BERT as well."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    calls = []
    real = cpu_step.dropout
    monkeypatch.setattr(cpu_step, "dropout", lambda x, level, inplace=False: calls.append(tuple(x.shape))
                        or real(x, level, inplace))
    for model in (BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, attn_implementation="eager")),
                  DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                   attn_implementation="eager"))):
        assert model.config._attn_implementation == "eager"
        calls.clear()
        model.train()
        with FastCpuDropout():
            model(input_ids=torch.randint(0, 100, (3, 7))).last_hidden_state.sum().backward()
        attention_probs = [s for s in calls if s == (3, 2, 7, 7)]
        assert len(attention_probs) == 2, calls  # one per layer
        assert len(calls) > 2 * 2  # and the modules' hidden-state dropouts


def test_where_each_speed_up_applies():
    assert fast_dropout_wanted(cuda=False, compiled=False, asked=True)
    assert not fast_dropout_wanted(cuda=True, compiled=False, asked=True)  # CUDA's fused dropout is fast already
    assert not fast_dropout_wanted(cuda=False, compiled=True, asked=True)  # a compiled graph draws its own numbers
    assert not fast_dropout_wanted(cuda=False, compiled=False, asked=False)  # --no-fast-dropout


@pytest.mark.parametrize("scale", [1e-4, 10.0])  # nothing clipped; clipped
def test_clipping_matches_pytorchs(scale):
    from tft.train.cpu_step import clip_grad_norm

    torch.manual_seed(0)
    ours = [nn.Parameter(torch.zeros(s)) for s in ((3000, 384), (384,), (1536, 384), (1,))]
    theirs = [nn.Parameter(torch.zeros(s)) for s in ((3000, 384), (384,), (1536, 384), (1,))]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn(a.shape) * scale
        b.grad = a.grad.clone()
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    got = clip_grad_norm(ours, 1.0)
    assert got.shape == () and got.item() == pytest.approx(expected.item(), rel=1e-4)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=0)
    assert (got.item() > 1.0) == (scale > 1)
    if scale < 1:  # not clipped: the gradients untouched, bit for bit
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))


def test_clipping_a_non_finite_norm_spreads_as_pytorchs_does():
    from tft.train.cpu_step import clip_grad_norm

    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    assert clip_grad_norm([p], 1.0).isnan() and p.grad.isnan().all()
    p.grad = torch.tensor([1.0, float("inf"), 2.0, 3.0])
    assert clip_grad_norm([p], 1.0).isinf() and p.grad[0] == 0 and p.grad[1].isnan()


def test_the_installed_trainer_clips_through_the_cpu_hook(tmp_path, monkeypatch):
    """`CpuStepTrainer` overrides transformers' `_clip_grad_norm`: a transformers that stops calling it would leave
    the speed-up silently unused; this says so. The norm it returns is the one the Trainer logs."""
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from tft.train.cpu_step import trainer_class

    calls = []
    real = cpu_step.clip_grad_norm
    monkeypatch.setattr(cpu_step, "clip_grad_norm", lambda params, max_norm: calls.append(max_norm) or real(params,
                                                                                                            max_norm))
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    rows = [{"input_ids": torch.randint(0, 50, (6,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, max_steps=3, use_cpu=True, report_to=[],
                             save_strategy="no", logging_steps=1, disable_tqdm=True, max_grad_norm=0.5)
    trainer = trainer_class(cuda=False)(model=model, args=args, train_dataset=rows)
    trainer.train()
    assert calls == [0.5] * 3
    logged = [r["grad_norm"] for r in trainer.state.log_history if "grad_norm" in r]
    assert len(logged) == 3 and all(n > 0 for n in logged)
    assert trainer_class(cuda=True).__name__ == "Trainer"
