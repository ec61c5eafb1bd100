"""Dropout masks drawn in bulk, for training on CPUs.

On a CPU, torch's dropout draws one Bernoulli sample per element (`bernoulli_`; MKL's vectorised generator
is taken only where cpuinfo says Intel, elsewhere a serial loop of 64-bit draws under a mutex), then
divides and multiplies. A BERT-family encoder drops out ~60 tensors a step (attention probabilities, both
residual branches of every layer, the embeddings, LoRA's input): a fifth of an fp32 LoRA step of e5-small
on an AMD EPYC, more under bf16.

`bulk_masks()` swaps torch.nn.functional.dropout, which nn.Dropout, transformers' attention and peft all
call, for `bulk_dropout`: the mask comes from numpy's PCG64 in bulk (`random_raw`, 64-bit words read as four
16-bit lanes, each kept when at or above round(p * 65,536)), is kept as one byte per element for the
backward pass, and is applied with its scale by one autograd function. Each element is kept independently
with probability 1 - round(p * 65,536) / 65,536 (p = 0.1: 0.899994 instead of 0.9); in fp32 the scale is the
inverse of that exact probability, so the expectation is the input's. Each call seeds a fresh PCG64 from
torch's CPU generator, so torch.manual_seed makes a run reproducible, as with torch's dropout.

In bf16 and fp16 the scale is what torch's CPU dropout multiplies by: 1 / (1 - p) rounded to the input's
type, since its mask is a tensor of that type (p = 0.1 in bf16: 1.109375, not 1.1111, so each bf16 dropout
of torch's shrinks its output by 0.16% on average). Bulk masks then differ from torch's dropout only in their
random draws. That was the one systematic difference found, but not the cause of what bulk masks cost prompt
tuning (two points of dev accuracy over 12 paired seeds, benchmarks/results/dropout-e5-small): with torch's
scale they cost the same (benchmarks/results/dropout-scale-e5-small). In fp32 they cost nothing measurable
(prompt tuning −0.005 over 12 paired seeds, p 0.49; LoRA +0.005 over 6; benchmarks/results/dropout-stream-e5-small,
where torch's own masks from another stream of its generator did no better): so `auto` draws bulk masks where a
CPU computes in fp32 (hardware.resolve_dropout_masks) and torch's in bf16, where the cause is still unknown.

Tensors on other devices (a GPU has a fused dropout kernel), in-place calls, integer tensors and a p
that rounds to 0 or 1 at the lanes' resolution go to torch's own dropout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LANES = 1 << 16  # values of a 16-bit lane: the resolution of the keep probability
_torch_dropout = F.dropout


def dropped_lanes(p: float) -> int:
    """Lanes below this value are dropped: p rounded to the lanes' resolution."""
    return round(p * LANES)


def keep_mask(count: int, dropped: int) -> torch.Tensor:
    """`count` independent booleans, each True with probability 1 - dropped / LANES."""
    seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's generator: manual_seed reproduces the masks
    words = np.random.PCG64(seed).random_raw((count + 3) // 4)
    return torch.from_numpy(words.view(np.uint16)[:count] >= dropped)


class _MaskedScale(torch.autograd.Function):
    """input * keep * scale, saving only the one-byte mask for backward."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _apply(input, keep, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return _apply(grad, keep, ctx.scale), None, None


def _apply(values: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    # `where` reads the one-byte mask as it is; multiplying by the bool mask first copied it into a tensor of
    # the values' type (a copy per dropout, forward and backward). The values are those of values * keep * scale.
    return torch.where(keep, values, 0).mul_(scale)


def bulk_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.dropout's signature and meaning, with the mask drawn in bulk (see the module)."""
    if not training or p == 0.0:
        return input
    dropped = dropped_lanes(p)
    if input.device.type != "cpu" or inplace or not 0 < dropped < LANES or not input.is_floating_point():
        return _torch_dropout(input, p, training, inplace)
    keep = keep_mask(input.numel(), dropped).view(input.shape)
    result: torch.Tensor = _MaskedScale.apply(input, keep, dropout_scale(p, dropped, input.dtype))
    return result


def dropout_scale(p: float, dropped: int, dtype: torch.dtype) -> float:
    """What kept elements are multiplied by: the inverse keep rate, or torch's rounding of it in bf16/fp16."""
    if dtype in (torch.bfloat16, torch.float16):
        return float(torch.tensor(1.0 / (1.0 - p), dtype=dtype))
    return LANES / (LANES - dropped)


@contextmanager
def bulk_masks(enabled: bool = True) -> Iterator[None]:
    """Within the block, every call of torch.nn.functional.dropout uses bulk_dropout."""
    if not enabled:
        yield
        return
    previous = F.dropout
    F.dropout = bulk_dropout
    try:
        yield
    finally:
        F.dropout = previous
