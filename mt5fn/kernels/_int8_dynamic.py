"""int8 x int8 products with dynamic activation scales: the int8 kernel of VNNI / AMX CPUs.

The weight-only int8 form (``{"int8", "scale"}``, ``mt5fn.quantize``) streams
int8 weights but multiplies in bfloat16 or float32. CPUs with VNNI or AMX
multiply int8 by int8 into int32 far faster, which is what CTranslate2's int8
does: each input row is quantized on the fly with its own absmax scale
(``x ~ q_x * s_row``, ``q_x`` in [-127, 127]), the product accumulates in int32,
and the result is rescaled by the row's scale and the weight's per-channel
scale. This file holds that form, built on oneDNN's quantized linear (the
kernel inductor uses for int8 on the CPU):

    {"int8_packed": Tensor (in, out) int8, oneDNN-packed,   the weight's int8 values
     "scale": Tensor (out,)}                                 per output channel, the tree's compute dtype

It is made from a weight-only int8 leaf by ``pack`` (a decoding layout; the
kernel choice of ``_layouts`` times it against the weight-only kernels) and
read by ``linear``. Its one extra error is the activation rounding, at most
half a step of ``s_row`` per input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

PACKED, SCALE = "int8_packed", "scale"
_QMAX = 127


def available() -> bool:
    """oneDNN's quantized linear is in this torch build."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_prepack") \
        and hasattr(torch.ops.onednn, "qlinear_pointwise")


def is_int8_dynamic(w: Any) -> bool:
    if not (isinstance(w, dict) and set(w) == {PACKED, SCALE}):
        return False
    packed, scale = w[PACKED], w[SCALE]
    return (isinstance(packed, Tensor) and isinstance(scale, Tensor) and packed.dtype == torch.int8
            and packed.dim() == 2 and scale.dim() == 1 and scale.shape[0] == packed.shape[1]
            and scale.dtype.is_floating_point)


def pack(weight_int8: Tensor, scale: Tensor) -> dict:
    """A weight-only int8 leaf's (out, in) values and (out,) scales -> the dynamic form (CPU only)."""
    packed = torch.ops.onednn.qlinear_prepack(weight_int8.contiguous(), None)  # (in, out), oneDNN-blocked
    return {PACKED: packed, SCALE: scale}


def int8_dynamic_linear(x: Tensor, w: dict) -> Tensor:
    """``x @ W.T`` with ``x`` quantized per row. x: (..., in) -> (..., out) in ``x``'s dtype."""
    rows = x.reshape(-1, x.shape[-1]).float()  # (N, in)
    row_scale = rows.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / _QMAX  # (N, 1)
    quantized = torch.round(rows / row_scale).to(torch.int8)  # (N, in), |q| <= 127
    zero = torch.zeros((), dtype=torch.long)
    if rows.shape[0] == 1:
        # one row: its scale is the tensor's, so oneDNN applies it and writes x's dtype at once (a decoding
        # step's head: no extra passes over the (1, V) logits; the same values as the general path)
        out = torch.ops.onednn.qlinear_pointwise.tensor(quantized, row_scale.reshape(()), zero, w[PACKED],
                                                        w[SCALE].float(), zero, None, 1.0, 0, x.dtype,
                                                        "none", [], "")  # (1, out)
        return out.view(*x.shape[:-1], out.shape[-1])
    # input scale 1 and zero point 0: oneDNN returns int32 sums times the weight's scales, in float32
    out = torch.ops.onednn.qlinear_pointwise(quantized, 1.0, 0, w[PACKED], w[SCALE].float(), zero, None, 1.0, 0,
                                             torch.float32, "none", [], "")  # (N, out)
    out = out * row_scale  # (N, out)
    return out.to(x.dtype).view(*x.shape[:-1], out.shape[-1])
