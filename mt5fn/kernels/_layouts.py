"""Weight-leaf forms made for a known row count: ``relayout_linear`` and ``fuse_outputs``.

A decoding step multiplies a handful of rows by every weight: it is bound by
how fast the weights stream from memory. Which layout streams fastest depends
on the rows, the dtype and the CPU; this module makes the forms that
``linear`` reads (``_linear``'s table), so the choice stays in this room.

Measured on a 2-core AMD EPYC (mt5-small head ``[250112, 512]``, fp32): one row
times the head took 100 ms with ``F.linear``, 46 ms with one ``(in, out)``
copy and 22-36 ms in 16384-column blocks (a block's output slice stays in
cache while the input streams through it); at 8 rows oneDNN's prepacked weight
ran 2.5-5x faster than MKL's gemm on the transposed operand.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._linear import COLUMNS, INT8, SCALE, linear_form

# Below this many elements a weight stays as it is: it sits in cache, a copy buys nothing,
# and the tiny test models then run exactly transformers' kernels.
MIN_PREPARED_NUMEL = 1 << 16
# Output columns per block of a one-row product (64 KiB of float32 output: cache-resident).
OUTPUT_BLOCK = 16384
# Rows of ``W`` transposed at a time when building column blocks (512 x 512 float32 = 1 MiB: in L2).
TRANSPOSE_TILE = 512


def _onednn_ready(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def relayout_linear(weight: Tensor, rows: int | None, *, min_numel: int = MIN_PREPARED_NUMEL,
                    block: int = OUTPUT_BLOCK) -> Any:
    """The weight-leaf form of ``weight`` (out, in) that is fastest for ``rows`` rows per product.

    One row on the CPU in float32 (and other non-bf16 dtypes): ``{"columns": [...]}``
    (``W.T`` in ``block``-column contiguous pieces). bfloat16 on the CPU, and several
    rows (or an unknown number, ``None``) in float32: a oneDNN-blocked tensor (for
    bf16 at one row the AVX512-BF16 kernels beat both ``F.linear`` and column
    blocks: 17.6 against 30.7 and 37.4 ms for the mt5-small head on a 2-core EPYC).
    Otherwise (GPUs, no oneDNN), and below ``min_numel`` elements: ``weight``
    itself. Pure: ``weight`` is never modified.
    """
    if linear_form(weight) != "dense" or weight.numel() < min_numel:
        return weight
    if weight.device.type == "cpu" and rows == 1 and weight.dtype != torch.bfloat16:
        return {COLUMNS: _transposed_blocks(weight.detach(), block)}
    if _onednn_ready(weight):
        try:
            return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
        except RuntimeError:  # a build whose oneDNN refuses this shape: keep F.linear
            return weight
    return weight


def _transposed_blocks(weight: Tensor, block: int) -> list[Tensor]:
    """``W.T`` (in, out) in contiguous ``block``-column pieces, each filled in tiles of ``TRANSPOSE_TILE``
    rows of ``W``: a tile's rows and its columns of the piece both stay in cache, where transposing a whole
    block at once strides through memory (0.30 s against 0.44 s for the mt5-small head)."""
    pieces = []
    for rows in weight.split(block):  # (<=block, in)
        piece = torch.empty(rows.shape[1], rows.shape[0], dtype=weight.dtype, device=weight.device)  # (in, <=block)
        for start in range(0, rows.shape[0], TRANSPOSE_TILE):
            tile = rows[start:start + TRANSPOSE_TILE]  # (<=tile, in)
            piece[:, start:start + tile.shape[0]].copy_(tile.t())
        pieces.append(piece)
    return pieces


def fuse_outputs(leaves: list[Any]) -> Any:
    """Stack projections along their outputs: dense tensors, or int8 forms (weights and scales)."""
    if all(linear_form(leaf) == "int8" for leaf in leaves):
        return {INT8: torch.cat([leaf[INT8] for leaf in leaves]), SCALE: torch.cat([leaf[SCALE] for leaf in leaves])}
    forms = {linear_form(leaf) for leaf in leaves}
    if forms != {"dense"}:
        raise ValueError(f"params: cannot fuse projections of forms {sorted(map(str, forms))}; prepare_decoding "
                         "takes float or mt5fn.quantize trees")
    return torch.cat([leaf.detach() for leaf in leaves])
