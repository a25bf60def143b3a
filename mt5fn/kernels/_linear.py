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
``{"int8": Tensor (out, in) int8,``         weight-only int8 with one scale per output channel
``"scale": Tensor (out,)}``                 (``W ~ int8 * scale[:, None]``; ``mt5fn.quantize``);
                                            computed in ``scale.dtype``: few rows on the CPU by
                                            ``torch._weight_int8pack_mm`` (bfloat16), otherwise
                                            by dequantizing to ``scale.dtype`` and ``F.linear``
``{"int8_packed": Tensor (in, out) int8,``  int8 x int8 with per-row dynamic activation scales
``"scale": Tensor (out,)}``                 (VNNI / AMX; ``_int8_dynamic``), the packed weight
                                            oneDNN-blocked: a decoding layout of the int8 form,
                                            where it measures faster (``_layouts``)
``{"q8_0": Tensor (out, in) int8,``         GGUF's Q8_0: one scale per 32-value block of a row
``"scale": Tensor (out, in / 32)}``         (``_blocks_q8``), dequantized one leaf at a time to
                                            ``scale.dtype`` and ``F.linear``
==========================================  =======================================================

Forms other than the plain tensor are inference layouts: they are made by
public pure functions (``mt5fn.prepare_decoding``) and never hold gradients.
``linear_shape`` gives any form's logical ``(out, in)`` and refuses an unknown
one, so the boundary checks can name the path of a bad leaf. Under
``torch.compile`` the packed forms (oneDNN-blocked, column blocks, int8 x int8)
run as opaque custom operators (``_opaque``), so a compiled decoding step keeps
the kernels the decoding layout chose.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _opaque
from ._blocks_q8 import is_q8_0, q8_0_linear
from ._columns import COLUMNS, columns_product, is_columns
from ._int8_dynamic import int8_dynamic_linear, is_int8_dynamic

INT8, SCALE = "int8", "scale"
# torch._weight_int8pack_mm wins over dequantize + F.linear up to about this many rows (measured on a
# 2-core AVX512-BF16 EPYC: 0.03 against 0.09 ms at 1-8 rows of a (1536, 512) weight, 3.3 against 1.0
# ms at 256 rows); it needs an input width that is a multiple of 16 (other widths give garbage).
_INT8PACK_MAX_ROWS, _INT8PACK_IN_MULTIPLE = 16, 16


def _is_int8(w: Any) -> bool:
    if not (isinstance(w, dict) and set(w) == {INT8, SCALE}):
        return False
    weight, scale = w[INT8], w[SCALE]
    return (isinstance(weight, Tensor) and isinstance(scale, Tensor) and weight.dtype == torch.int8
            and weight.dim() == 2 and scale.dim() == 1 and scale.shape[0] == weight.shape[0]
            and scale.dtype.is_floating_point)


def linear_form(w: Any) -> str | None:
    """The name of ``w``'s leaf form (``"dense"``, ``"onednn"``, ``"columns"``, ``"int8"``,
    ``"int8-dynamic"``), or None."""
    if isinstance(w, Tensor):
        if w.dim() != 2 or not (w.dtype.is_floating_point or w.dtype.is_complex):
            return None
        return "onednn" if w.layout == torch._mkldnn else "dense"
    if is_columns(w):
        return "columns"
    if _is_int8(w):
        return "int8"
    if is_int8_dynamic(w):
        return "int8-dynamic"
    if is_q8_0(w):
        return "q8_0"
    return None


def linear_shape(w: Any, path: str = "weight") -> tuple[int, int]:
    """The logical ``(out, in)`` of a weight leaf of any form; ``ValueError`` naming ``path`` otherwise."""
    form = linear_form(w)
    if form in ("dense", "onednn"):
        return int(w.shape[0]), int(w.shape[1])
    if form == "int8":
        return int(w[INT8].shape[0]), int(w[INT8].shape[1])
    if form == "int8-dynamic":
        return int(w["int8_packed"].shape[1]), int(w["int8_packed"].shape[0])
    if form == "q8_0":
        return int(w["q8_0"].shape[0]), int(w["q8_0"].shape[1])
    if form == "columns":
        blocks = w[COLUMNS]
        inputs = {int(block.shape[0]) for block in blocks}
        if len(inputs) != 1:
            raise ValueError(f"{path}: column blocks disagree on the input width: {sorted(inputs)}")
        return sum(int(block.shape[1]) for block in blocks), inputs.pop()
    described = f"a {type(w).__name__}" if not isinstance(w, (dict, Tensor)) else (
        f"a dict with keys {sorted(map(str, w))}" if isinstance(w, dict) else f"a tensor of shape {tuple(w.shape)}")
    raise ValueError(f"{path}: not a weight-leaf form mt5fn knows (a floating (out, in) tensor, a oneDNN-packed "
                     f"tensor, {{'columns': [...]}}, {{'int8': int8 (out, in), 'scale': (out,)}} or "
                     f"{{'int8_packed': ..., 'scale': ...}} or {{'q8_0': int8 (out, in), 'scale': (out, in / 32)}}); got {described}")


def linear_dtype(w: Any) -> torch.dtype:
    """The dtype ``linear(x, w)`` computes in (for int8 forms: the scale's)."""
    if isinstance(w, dict):
        if _opaque.ONEDNN_BOX in w:  # a oneDNN-blocked leaf boxed for a compiled step (``_opaque.box_onednn_leaves``)
            return w[_opaque.ONEDNN_BOX].dtype
        return w[SCALE].dtype if SCALE in w else w[COLUMNS][0].dtype
    return w.dtype


def dequantize_int8(w: dict) -> Tensor:
    """The (out, in) weight an int8 form stands for, in its compute dtype."""
    scale = w[SCALE]
    return w[INT8].to(scale.dtype) * scale[:, None]  # (out, in)


def _int8(x: Tensor, w: dict) -> Tensor:
    weight, scale = w[INT8], w[SCALE]
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    if (x.device.type == "cpu" and scale.dtype == torch.bfloat16 and rows.shape[0] <= _INT8PACK_MAX_ROWS
            and weight.shape[1] % _INT8PACK_IN_MULTIPLE == 0):
        out = torch._weight_int8pack_mm(rows.to(scale.dtype).contiguous(), weight, scale)  # (N, out)
    else:
        out = F.linear(rows.to(scale.dtype), dequantize_int8(w))  # (N, out)
    return out.to(x.dtype).view(*x.shape[:-1], out.shape[-1])


def linear(x: Tensor, w: Any) -> Tensor:
    """``x @ W.T`` for a weight leaf ``w`` of any documented form. x: (..., in) -> (..., out)."""
    if isinstance(w, Tensor) and w.layout != torch._mkldnn:
        return F.linear(x, w)  # (..., out)
    if isinstance(w, dict) and INT8 in w:
        return _int8(x, w)
    if isinstance(w, dict) and "q8_0" in w:
        return q8_0_linear(x, w)
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    # the packed forms: their kernels directly, or as opaque operators under a compiler (``_opaque``)
    compiling = torch.compiler.is_compiling()
    if isinstance(w, Tensor) or (isinstance(w, dict) and _opaque.ONEDNN_BOX in w):  # oneDNN-blocked
        blocked = w if isinstance(w, Tensor) else w[_opaque.ONEDNN_BOX]
        out = _opaque.onednn_linear(rows, blocked) if compiling else \
            torch.ops.mkldnn._linear_pointwise(rows, blocked, None, "none", [], "")  # (N, out)
    elif isinstance(w, dict) and COLUMNS in w:
        out = _opaque.columns_linear(rows, w[COLUMNS]) if compiling else columns_product(rows, w[COLUMNS])
    elif isinstance(w, dict) and "int8_packed" in w:
        out = _opaque.int8_dynamic_linear(rows, w["int8_packed"], w[SCALE]) if compiling else \
            int8_dynamic_linear(rows, w)
    else:
        linear_shape(w)  # raises the error that describes the leaf
        raise AssertionError("unreachable")
    return out.view(*x.shape[:-1], out.shape[-1])  # (..., out)
