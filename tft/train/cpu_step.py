"""What makes a training step on a CPU fast, beyond its precision: the decisions in plain Python, the mechanisms small.

Measured on MiniLM-L6 (batch 32, bf16 autocast, eager attention, fused AdamW; AMX Xeon, 2 cores, torch 2.13; the
same process, steps interleaved; docs/benchmarks.md), two costs that are not arithmetic:

* **Dropout's random numbers.** PyTorch's CPU dropout draws its Bernoulli mask from one Mersenne-Twister stream at
  about 13 ns a number (1.5-2.9 ms for one 32x14x384 activation): 15% of a step at SST-2's 14 tokens. A mask drawn
  by NumPy's SFC64 generator as 16-bit integers takes a third of that. `FastCpuDropout` answers every
  `torch.nn.functional.dropout` call on a CPU tensor in training (`nn.Dropout` modules and the attention functions
  that call it directly alike) with such a mask: the same Bernoulli, its probability rounded to 1/65536 and the
  scale taken from the rounded one (unbiased). Each mask's seed is drawn from PyTorch's generator, so `--seed`, and
  the generator state a checkpoint saves, fix the masks as they fix PyTorch's. Steps: 6% faster at 14 tokens, 17% at
  40.
* **Gradient clipping.** `torch.nn.utils.clip_grad_norm_` on a CPU takes one norm and one multiply per parameter
  tensor (its foreach kernels fall back to loops there), each a parallel region of its own, and multiplies even when
  nothing is clipped (by 1.0): 17 ms a step for MiniLM's 103 tensors. `clip_grad_norm` computes the same 2-norm as
  one BLAS dot per tensor (closer to the float64 norm than PyTorch's: 7e-6 against 5e-4 relative on a
  word-embedding-sized gradient) and multiplies only when it clips: 5 ms. The Trainer runs it through
  `CpuStepTrainer`.

Neither changes what is computed beyond the dropout rounding and the norm's last bits; neither is used on a GPU,
where these costs are absent. (Tried and left out: raising glibc's mmap and trim thresholds so that the 47 MB
word-embedding gradient, allocated anew each step, stops page-faulting in: 11,700 faults a step fell to 144, the step
only 1-5% faster, and the process would keep hundreds of MB more.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

MASK_LEVELS = 1 << 16  # a mask number is a uint16: the dropout probability is rounded to 1/65536


def fast_dropout_wanted(*, cuda: bool, compiled: bool, asked: bool) -> bool:
    """NumPy-drawn dropout masks where PyTorch's are slow: a CPU run, not torch.compile'd (its graph draws its own
    random numbers, fused), not turned off with --no-fast-dropout."""
    return asked and not cuda and not compiled


def mask_level(p: float) -> int | None:
    """The 16-bit level at or over which a mask number keeps its element, for dropout probability `p`; None where a
    16-bit mask cannot stand for `p` (0 and 1 are exact in PyTorch's own; a p under half a level would round to no
    dropout at all; a p outside [0, 1] is PyTorch's to refuse)."""
    level = round(p * MASK_LEVELS)
    return level if 0 < level < MASK_LEVELS else None


def keep_mask(shape: torch.Size, level: int) -> torch.Tensor:
    """A bool tensor: True where an element is kept, each with probability 1 - level / MASK_LEVELS (the dropout
    probability rounded to 1/65536)."""
    seed = int(torch.randint(0, 1 << 62, (1,)).item())  # from PyTorch's generator: --seed and resume fix it
    numbers = np.random.Generator(np.random.SFC64(seed)).integers(0, MASK_LEVELS, int(np.prod(shape, dtype=np.int64)),
                                                                  dtype=np.uint16)
    return torch.from_numpy(numbers >= level).view(shape)


def dropout(x: torch.Tensor, level: int, inplace: bool = False) -> torch.Tensor:
    """Dropout in training with a NumPy-drawn mask at `mask_level`'s level, scaled by the rounded probability's
    1 / (1 - p) (autograd keeps the scaled mask for the backward, as PyTorch's dropout does)."""
    noise = keep_mask(x.shape, level).to(x.dtype).mul_(MASK_LEVELS / (MASK_LEVELS - level))
    return x.mul_(noise) if inplace else x * noise


class FastCpuDropout(TorchFunctionMode):
    """While active, `torch.nn.functional.dropout` on a CPU tensor in training uses `dropout` above; every other call,
    and dropout that PyTorch computes exactly anyway (p of 0 or 1, evaluation), goes through untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            names = ("input", "p", "training", "inplace")
            call = {**dict(zip(names, args)), **kwargs}
            x, level = call["input"], mask_level(call.get("p", 0.5))
            if (call.get("training", True) and isinstance(x, torch.Tensor) and x.device.type == "cpu"
                    and x.is_floating_point() and level is not None):
                return dropout(x, level, inplace=call.get("inplace", False))
        return func(*args, **kwargs)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` with the 2-norm for gradients on a CPU: the total norm before clipping (a
    0-dim tensor), the gradients scaled by max_norm / (norm + 1e-6) where that is under 1 (or not a number: as
    PyTorch, a non-finite norm spreads to every gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)).float() for g in grads]).sum().sqrt()
    coef = float(max_norm) / (float(total) + 1e-6)
    if not coef >= 1.0:
        torch._foreach_mul_(grads, coef)
    return total


def fast_clip_applies(grads, *, distributed_type: str, scaler) -> bool:
    """`clip_grad_norm` stands in for accelerate's where that only unscales (no scaler here) and clips locally: one
    process or CPU DDP (gradients already averaged), dense floating-point gradients on the CPU."""
    if distributed_type not in ("NO", "MULTI_CPU") or scaler is not None:
        return False
    return all(g.device.type == "cpu" and g.layout == torch.strided and g.is_floating_point() for g in grads)


def trainer_class(*, cuda: bool):
    """The Trainer `tft train` runs: transformers' own on a GPU, `CpuStepTrainer` on a CPU."""
    from transformers import Trainer

    if cuda:
        return Trainer

    class CpuStepTrainer(Trainer):
        """transformers' Trainer with `clip_grad_norm` where it applies (`fast_clip_applies`); everything else, and
        every other case, is the Trainer's own. `_clip_grad_norm` is the Trainer's hook for clipping (transformers 5);
        tests/test_cpu_step.py checks that the installed version still calls it."""

        def _clip_grad_norm(self, model):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            # accelerate's DistributedType is a str enum: compared by its value
            if fast_clip_applies(grads, distributed_type=self.accelerator.distributed_type,
                                 scaler=getattr(self.accelerator, "scaler", None)):
                return clip_grad_norm(model.parameters(), self.args.max_grad_norm)
            return super()._clip_grad_norm(model)

    return CpuStepTrainer
