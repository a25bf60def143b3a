"""``linear(x, w)``: the one matrix product of the model, over every documented weight-leaf form.

Every projection in mt5fn (attention q/k/v/o, the FFN, the LM head) goes
through ``linear``. A weight leaf of the parameter pytree is one of:

==========================================  =======================================================
form                                        product
==========================================  =======================================================
``Tensor (out, in)``, strided               ``F.linear(x, w)``: the plain pytree, transformers'
                                            kernel
``Tensor (out, in)``, ``torch._mkldnn``     a oneDNN-blocked copy for a known row count
                                            (``torch.ops.mkldnn._linear_pointwise``, the kernel
                                            inductor uses for frozen weights)
``{"columns": [Tensor (in, b_i), ...]}``    ``w.T`` split into contiguous column blocks
                                            (``sum b_i = out``): a one-row product streams each
                                            block while its slice of the output stays in cache
==========================================  =======================================================

Forms other than the plain tensor are inference layouts: they are made by
public pure functions (``mt5fn.prepare_decoding``) and never hold gradients.
``linear_shape`` gives any form's logical ``(out, in)`` and refuses an unknown
one, so the boundary checks can name the path of a bad leaf.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

COLUMNS = "columns"


def _is_columns(w: Any) -> bool:
    return isinstance(w, dict) and set(w) == {COLUMNS} and isinstance(w[COLUMNS], list) and bool(w[COLUMNS]) \
        and all(isinstance(block, Tensor) and block.dim() == 2 for block in w[COLUMNS])


def linear_form(w: Any) -> str | None:
    """The name of ``w``'s leaf form (``"dense"``, ``"onednn"``, ``"columns"``), or None if unknown."""
    if isinstance(w, Tensor):
        if w.dim() != 2:
            return None
        return "onednn" if w.layout == torch._mkldnn else "dense"
    if _is_columns(w):
        return "columns"
    return None


def linear_shape(w: Any, path: str = "weight") -> tuple[int, int]:
    """The logical ``(out, in)`` of a weight leaf of any form; ``ValueError`` naming ``path`` otherwise."""
    form = linear_form(w)
    if form in ("dense", "onednn"):
        return int(w.shape[0]), int(w.shape[1])
    if form == "columns":
        blocks = w[COLUMNS]
        inputs = {int(block.shape[0]) for block in blocks}
        if len(inputs) != 1:
            raise ValueError(f"{path}: column blocks disagree on the input width: {sorted(inputs)}")
        return sum(int(block.shape[1]) for block in blocks), inputs.pop()
    described = f"a {type(w).__name__}" if not isinstance(w, (dict, Tensor)) else (
        f"a dict with keys {sorted(map(str, w))}" if isinstance(w, dict) else f"a tensor of shape {tuple(w.shape)}")
    raise ValueError(f"{path}: not a weight-leaf form mt5fn knows (a (out, in) tensor, a oneDNN-packed tensor, "
                     f"or {{'columns': [...]}}); got {described}")


def linear_dtype(w: Any) -> torch.dtype:
    """The dtype ``x`` must have for ``linear(x, w)``."""
    return w[COLUMNS][0].dtype if isinstance(w, dict) else w.dtype


def _columns(x: Tensor, blocks: list[Tensor]) -> Tensor:
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    if len(blocks) == 1:
        out = torch.mm(rows, blocks[0])  # (N, out)
    else:
        width = sum(block.shape[1] for block in blocks)
        out = rows.new_empty(rows.shape[0], width)  # (N, out)
        start = 0
        for block in blocks:
            end = start + block.shape[1]
            if rows.shape[0] == 1:
                torch.mm(rows, block, out=out[:, start:end])  # one row: the slice is contiguous, write in place
            else:
                out[:, start:end] = torch.mm(rows, block)
            start = end
    return out.view(*x.shape[:-1], out.shape[-1])


def linear(x: Tensor, w: Any) -> Tensor:
    """``x @ W.T`` for a weight leaf ``w`` of any documented form. x: (..., in) -> (..., out)."""
    if isinstance(w, Tensor):
        if w.layout != torch._mkldnn:
            return F.linear(x, w)  # (..., out)
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        out = torch.ops.mkldnn._linear_pointwise(rows, w, None, "none", [], "")  # (N, out)
        return out.view(*x.shape[:-1], out.shape[-1])
    if isinstance(w, dict) and COLUMNS in w:  # the boundary checks validated the form
        return _columns(x, w[COLUMNS])
    linear_shape(w)  # raises the error that describes the leaf
    raise AssertionError("unreachable")
