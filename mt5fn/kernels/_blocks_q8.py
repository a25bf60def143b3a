"""GGUF's Q8_0 as a weight-leaf form: ``{"q8_0": int8 (out, in), "scale": (out, in // 32)}``.

llama.cpp's Q8_0 stores each row in blocks of 32 values, one float16 scale
per block: ``W[o, 32 b + j] = q8_0[o, 32 b + j] * scale[o, b]``. Kept this
way a projection costs 1 + 1/8 bytes a value (float32 scales: exactly the
float16 ones), near a quarter of float32. ``linear`` dequantizes one leaf at a
time to the scale's dtype and multiplies with ``F.linear``: at most one
projection's float copy exists at once, and the product is exactly the product
with the dequantized weight.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Q8_0, SCALE = "q8_0", "scale"
BLOCK = 32


def is_q8_0(w: Any) -> bool:
    if not (isinstance(w, dict) and set(w) == {Q8_0, SCALE}):
        return False
    weight, scale = w[Q8_0], w[SCALE]
    return (isinstance(weight, Tensor) and isinstance(scale, Tensor) and weight.dtype == torch.int8
            and weight.dim() == 2 and scale.dim() == 2 and weight.shape[1] % BLOCK == 0
            and tuple(scale.shape) == (weight.shape[0], weight.shape[1] // BLOCK) and scale.dtype.is_floating_point)


def dequantize_q8_0(w: dict) -> Tensor:
    """The (out, in) weight the leaf stands for, in the scale's dtype."""
    weight, scale = w[Q8_0], w[SCALE]
    out, width = weight.shape
    blocks = weight.view(out, width // BLOCK, BLOCK).to(scale.dtype)  # (out, in / 32, 32)
    return (blocks * scale[:, :, None]).view(out, width)  # (out, in)


def q8_0_linear(x: Tensor, w: dict) -> Tensor:
    """x: (..., in) -> (..., out), computed in the scale's dtype."""
    dtype = w[SCALE].dtype
    return F.linear(x.to(dtype), dequantize_q8_0(w)).to(x.dtype)  # (..., out)


def from_gguf_blocks(raw: Tensor, scale_dtype: torch.dtype = torch.float32) -> dict:
    """The leaf from GGUF's bytes: raw (out, in / 32 * 34) uint8, each block a float16 scale then 32 int8."""
    out = raw.shape[0]
    blocks = raw.reshape(out, -1, 2 + BLOCK)  # (out, in / 32, 34)
    scale = blocks[:, :, :2].contiguous().view(torch.float16).reshape(out, -1)  # (out, in / 32)
    weight = blocks[:, :, 2:].contiguous().view(torch.int8).reshape(out, -1)  # (out, in)
    return {Q8_0: weight, SCALE: scale.to(scale_dtype)}


def stack_q8_0(leaves: list[dict]) -> dict | None:
    """Leaves stacked along their outputs (blocks are per row), or None when their scale dtypes differ."""
    if len({leaf[SCALE].dtype for leaf in leaves}) != 1 or len({leaf[Q8_0].shape[1] for leaf in leaves}) != 1:
        return None
    return {Q8_0: torch.cat([leaf[Q8_0] for leaf in leaves]), SCALE: torch.cat([leaf[SCALE] for leaf in leaves])}
