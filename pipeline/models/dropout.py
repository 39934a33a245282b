"""Dropout whose masks cost a quarter of a random draw per element.

``nn.Dropout`` on the CPU draws one Bernoulli sample per element (``bernoulli_``), which the
profiler put at 30% of the MLP's training step and ~15 ns an element on this 2-core machine. Here a
mask element is 16 random bits: one 64-bit draw (``random_`` over the full int64 range) gives four
of them, and an element is kept when its 16 bits, read as a signed int16, reach a threshold. The
drop rate is ``p`` rounded to a multiple of 1/65536, and kept elements are scaled by the inverse of
the exact keep rate, so the expected output equals the input as with ``nn.Dropout``. Masks come from
the global generator, so a seeded run draws the same masks every time (not the same as
``nn.Dropout``'s: a run with this dropout differs from one with ``nn.Dropout`` as two seeds do).

Under ``torch.compile`` both fall back to ``torch.rand`` (inductor generates the random numbers
inside its fused kernels, and AOT autograd cannot trace the int64 -> int16 view).

The same 16-bit draws give DropKey's attention masks (``dropkey_mask``): see ``pipeline.models.blocks``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 16  # a mask element is 16 random bits


def drop_threshold(p: float) -> int:
    """Dropped elements: the int16 draws below this threshold (``round(p * 65536)`` of the 65536 values)."""
    return min(LEVELS - 1, round(p * LEVELS)) - LEVELS // 2


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform int16 values of ``shape``: four per 64-bit draw from the global generator."""
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return draws.view(torch.int16)[:n].view(shape)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A bool mask of ``shape``: each element True with probability 1 - p (p rounded to 1/65536)."""
    return random_int16(shape, device) >= drop_threshold(p)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with 16-bit masks: kept elements x / (keep rate), the others 0."""
    if not training or p <= 0:
        return x
    if torch.compiler.is_compiling():  # inductor draws F.dropout's masks inside its fused kernels
        return F.dropout(x, p, True)
    kept = LEVELS // 2 - drop_threshold(p)  # of the 65536 values
    # One float mask [x.shape] holding 0 or 1 / keep rate: the backward multiplies by the same tensor.
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(LEVELS / kept)
    return x * scale


def dropkey_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An additive attention mask of ``shape`` [N, H, L, S]: 0 for kept keys, -1e4 for the keys dropped
    with probability p. Finite, so a query whose keys are all dropped attends uniformly instead of
    producing NaN; exp(-1e4) is 0 in fp32 and bf16, so a dropped key gets no weight otherwise."""
    return (random_int16(shape, device) < drop_threshold(p)).to(dtype).mul_(-1e4)


class Dropout(nn.Module):
    """A drop-in ``nn.Dropout`` (same ``p``, nothing in the state dict) with 16-bit masks (see the module)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
