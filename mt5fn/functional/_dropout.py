"""Dropout with explicit randomness.

``torch.nn.functional.dropout`` draws from the global generator; mt5fn's
functions are deterministic unless a rate is given, and then draw from the
``generator`` passed in, so a training run can be replayed bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dropout(hidden: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Zero each element with probability ``rate``, scale the rest by ``1 / (1 - rate)``."""
    if rate <= 0.0:
        return hidden
    keep = torch.rand(hidden.shape, generator=generator, device=hidden.device) >= rate  # same shape
    return hidden * keep.to(hidden.dtype) / (1.0 - rate)


def clamp_half(hidden: Tensor) -> Tensor:
    """transformers' float16 guard after each sublayer: clamp to the finite range,
    1000 below the maximum when an inf appeared (keeps training from overflowing)."""
    if hidden.dtype != torch.float16:
        return hidden
    big = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(hidden).any(), big - 1000, big)
    return torch.clamp(hidden, min=-limit, max=limit)
