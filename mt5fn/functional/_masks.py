"""Additive attention biases: relative position bias plus padding / causal masks.

A masked score gets ``finfo(dtype).min`` added (never ``-inf``: a fully masked
row then softmaxes to uniform weights instead of NaN, as in transformers). The
position bias and the mask are summed once per stack and shared by all blocks
(UMT5: once per block, from the block's own table).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ._position import position_bias


class PositionConfig(Protocol):
    """The one config field the biases read (``mt5fn.MT5Config`` has it)."""

    relative_attention_max_distance: int


def padding_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, S) keep-mask -> (B, 1, 1, S) additive bias: 0 kept, finfo.min masked."""
    if mask is None:
        return None
    keep = mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def causal_bias(length: int, mask: Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Causal (and optional key padding) additive bias: (1 | B, 1, T, T)."""
    position = torch.arange(length, device=device)
    keep = (position[None, :] <= position[:, None])[None, None]  # (1, 1, T, T)
    if mask is not None:
        keep = keep & mask.bool()[:, None, None, :]  # (B, 1, T, T)
    return torch.zeros((), dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)


def self_attention_bias(table: Tensor, cfg: PositionConfig, mask_bias: Tensor | None, query_length: int,
                        key_length: int, *, bidirectional: bool, query_offset: int | Tensor = 0,
                        dtype: torch.dtype) -> Tensor:
    """Position bias of ``table`` plus an additive mask: (1 | B, H, Tq, Tk)."""
    bias = position_bias(table, query_length, key_length, bidirectional=bidirectional,
                         max_distance=cfg.relative_attention_max_distance,
                         query_offset=query_offset).to(dtype)  # (1, H, Tq, Tk)
    return bias if mask_bias is None else bias + mask_bias
