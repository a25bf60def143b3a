"""RMSNorm as T5 uses it (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization").

No mean subtraction and no bias. The mean square is accumulated in float32 even
for half-precision inputs, and the normalised activations are cast back to the
weight's dtype before the scale is applied, exactly as transformers'
``T5LayerNorm`` does. (float64 inputs keep float64 statistics, where
transformers would round them to float32.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(weight: Tensor, hidden: Tensor, eps: float = 1e-6) -> Tensor:
    """``weight * hidden / sqrt(mean(hidden**2) + eps)`` over the last axis.

    weight: (d,); hidden: (..., d) -> (..., d).
    """
    # Statistics in float32 at least (transformers upcasts half inputs); float64 stays float64,
    # else float64 gradient checks would only be float32-accurate.
    stat_dtype = torch.promote_types(hidden.dtype, torch.float32)
    variance = hidden.to(stat_dtype).pow(2).mean(-1, keepdim=True)  # (..., 1)
    hidden = hidden * torch.rsqrt(variance + eps)  # float32 for half inputs: promotes like HF
    if weight.dtype in (torch.float16, torch.bfloat16):
        hidden = hidden.to(weight.dtype)
    return weight * hidden
