"""Several projections of one input, from their own leaves or from one fused leaf.

The block math asks for ``q, k, v = project(p, x, "q", "k", "v")`` and
``gate, up = project(p, x, "wi_0", "wi_1")``. A training tree holds each
projection as its own leaf; a decoding layout (``mt5fn.prepare_decoding``)
stacks them along the outputs into one leaf (``"qkv"``, ``"wi_01"``) so a step
makes one product instead of three or two. Which of the two a tree holds is
a weight form, so the answer lives here, beside ``linear``.
"""

from __future__ import annotations

from torch import Tensor

from ._linear import linear

# Projections that may be stored as one leaf, stacked along the outputs in this order.
FUSED_NAMES: dict[tuple[str, ...], str] = {("q", "k", "v"): "qkv", ("wi_0", "wi_1"): "wi_01"}


def project(p: dict, hidden: Tensor, *names: str) -> tuple[Tensor, ...]:
    """``linear(hidden, p[name])`` for each name, read from the fused leaf when ``p`` holds one.

    hidden: (..., in) -> one (..., out_i) tensor per name.
    """
    fused = FUSED_NAMES.get(names)
    if fused is not None and fused in p:
        return linear(hidden, p[fused]).chunk(len(names), dim=-1)  # len(names) x (..., out)
    return tuple(linear(hidden, p[name]) for name in names)
