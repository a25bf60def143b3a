"""The position-wise feed-forward sublayer: ``relu`` (T5 v1.0) or gated (v1.1 / mT5).

Shazeer 2020 ("GLU Variants Improve Transformer"): the gated form is
``wo(act(x wi_0) * (x wi_1))``. ``gated-gelu`` uses the tanh approximation of
GELU (transformers' ``gelu_new``); plain ``gelu`` is the exact erf form.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import linear, linear_dtype, project
from ._dropout import dropout


def _gelu_fast(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def _gelu_new(x: Tensor) -> Tensor:
    # transformers' NewGELUActivation is this formula written out in eight elementwise ops
    # (each saving a tensor for backward); torch's fused kernel computes the same formula in
    # one pass, forward and backward, and agrees with it to float32 round-off (~2e-7 absolute).
    return F.gelu(x, approximate="tanh")


ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": _gelu_fast,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "mish": F.mish,
    "relu2": lambda x: torch.square(F.relu(x)),
}


def feed_forward(p: dict, hidden: Tensor, *, activation: str, dropout_rate: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """p: {"wi": (d_ff, d)} (T5 v1.0) or {"wi_0", "wi_1": (d_ff, d)} (gated), plus {"wo": (d, d_ff)}.

    hidden: (B, T, d) -> (B, T, d). The sublayer's norm and residual are the caller's.
    """
    act = ACTIVATION_FUNCTIONS[activation]
    if "wi" in p:
        inner = act(linear(hidden, p["wi"]))  # (B, T, d_ff)
    else:
        gate, up = project(p, hidden, "wi_0", "wi_1")  # 2 x (B, T, d_ff)
        inner = act(gate) * up  # (B, T, d_ff)
    inner = dropout(inner, dropout_rate, generator)
    wo_dtype = linear_dtype(p["wo"])
    if inner.dtype != wo_dtype and wo_dtype.is_floating_point:
        inner = inner.to(wo_dtype)  # transformers keeps ``wo`` in float32 for half models
    return linear(inner, p["wo"])  # (B, T, d)
