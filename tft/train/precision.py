"""`--precision auto`: the training precision that fits the hardware, decided by plain Python.

bf16 on GPUs that have it (Ampere and newer) and on CPUs with AVX-512 BF16 or AMX (PyTorch's CPU autocast
runs bf16 matmuls there); fp16 with loss scaling on older GPUs; fp32 otherwise. It is the default: with native bf16
(and eager attention on the CPU, `training_attention`, and tft/train/cpu_step.py's dropout and clipping) it trained
MiniLM SST-2 at 1.62x the Hugging Face Trainer's best fp32 on an AMX Xeon (median of five runs; 1.69x over a run's
steps interleaved) at the same dev accuracy, and 1.9-2.2x fp32 on a Zen 5 EPYC (docs/benchmarks.md).
"""

from __future__ import annotations

from tft.cpus import CPU_BF16_FLAGS, cpu_flags  # noqa: F401 - read here by training and its tests

CHOICES = ("auto", "fp32", "fp16", "bf16")
PAD_MULTIPLE = 8


def bf16_problem(*, cuda: bool, cuda_bf16_native: bool, flags: set[str]) -> str | None:
    """Why bf16 would be emulated here (and slow), or None where the hardware has it."""
    if cuda:
        return None if cuda_bf16_native else "this GPU has no native bfloat16 (Ampere or newer has; PyTorch emulates it)"
    if any(f in flags for f in CPU_BF16_FLAGS):
        return None
    return ("this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16); PyTorch emulates it, about 15x slower "
            "than fp32 (measured on an AVX2-only AMD EPYC)")


def choose_precision(requested: str, *, cuda: bool, cuda_bf16: bool, flags: set[str]) -> tuple[str, str]:
    """(fp32 | fp16 | bf16, why) for a requested precision on this hardware; `cuda_bf16` is native bf16 only (auto
    never picks emulated bf16)."""
    if requested != "auto":
        return requested, "asked for"
    if cuda:
        return ("bf16", "the GPU supports bfloat16") if cuda_bf16 else ("fp16", "the GPU lacks bfloat16")
    found = [f for f in CPU_BF16_FLAGS if f in flags]
    if found:
        return "bf16", f"the CPU has {' and '.join(found)}"
    return "fp32", "no GPU, and the CPU has no bfloat16 instructions"


def training_attention(precision: str, *, cuda: bool) -> str | None:
    """The attention implementation training asks transformers for, or None for the family's default (SDPA where it
    has it).

    bf16 on a CPU trains with the plain ("eager") attention: PyTorch's CPU scaled-dot-product attention runs its
    backward in bf16 slower than in fp32 (MiniLM-L6, batch 32, AMX Xeon, torch 2.13: a 56-token batch's step took 688
    ms with SDPA in bf16, 632 ms with SDPA in fp32, 401 ms with eager attention in bf16; at 14 tokens 294, 216 and 183
    ms), so autocast's matmul gain was lost in the attention's backward. The two compute the same function: the
    exported graph has always been traced with eager attention (tft/export/onnx_export.py).
    """
    return "eager" if precision == "bf16" and not cuda else None


def padding_multiple(precision: str, max_seq_length: int, *, cuda: bool) -> int | None:
    """What each batch's padded length is rounded up to in training, or None for the longest text in it.

    On a GPU in bf16 and fp16 a multiple of 8: tensor cores want multiples of 8 (transformers' run_glue.py pads so in
    fp16). Not on a CPU: oneDNN builds its bf16 matmul kernels per shape (17 for MiniLM-L6, about 32 ms for every new
    batch length), but padding to 8 added 19% tokens to SST-2's short batches, and MiniLM's steps over a run's
    batches took as long as unpadded ones on the first pass and 10% longer on later ones (benchmarks/train_step.py,
    AMX Xeon). Only where --max-seq-length is itself a multiple, so rounding never passes it (nor the model's
    positions).
    """
    if not cuda or precision not in ("bf16", "fp16") or max_seq_length % PAD_MULTIPLE:
        return None
    return PAD_MULTIPLE
