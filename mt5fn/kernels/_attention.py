"""Which attention kernel runs: torch's fused ``scaled_dot_product_attention``, or the plain softmax.

Both compute T5's unscaled attention, ``softmax(q k^T + bias) v``; the plain
path is the math as ``functional.attend`` spells it out. The fused kernel
(``scale=1.0``) is faster and lighter, but on the CPU it cannot serve:

* forward-mode AD (``jvp`` / ``jacfwd``) and ``vmap`` (no batching rule: it would loop);
* attention dropout drawn from an explicit generator (its dropout uses the global one);
* a bias that needs a gradient (training: the position-bias table is learned), where the
  CPU kernels fall back to a slower unfused "math" composite with extra scaling and
  ``-inf`` checks anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._transforms import under_batching_or_forward_ad


def fused_attention_applies(bias: Tensor | None, dropout_rate: float) -> bool:
    """True when ``fused_attention`` computes what the plain softmax would, and faster."""
    bias_needs_grad = bias is not None and bias.requires_grad and torch.is_grad_enabled()
    return not (dropout_rate > 0.0 or bias_needs_grad or under_batching_or_forward_ad())


def fused_attention(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(q k^T + bias) v by SDPA, unscaled. (B, H, Tq, d), (B, H, Tk, d) x2 -> (B, H, Tq, d)."""
    if bias is not None and bias.dtype != query.dtype:
        # a half model's float32 residual stream (FFN wo kept in float32) makes a float32 bias
        bias = bias.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)
