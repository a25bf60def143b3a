"""Column blocks of ``W.T``: the one-row weight-leaf form ``{"columns": [Tensor (in, b_i), ...]}``.

A one-row product ``x @ W.T`` with ``W (out, in)`` reads all of ``W`` once; MKL's
kernel for the transposed operand streams it poorly at one row. Stored as
``W.T`` cut into contiguous column blocks (``sum b_i = out``), each block's
slice of the output stays in cache while the input streams through it
(measured on a 2-core AMD EPYC, mt5-small head: 100 ms with ``F.linear``,
22-36 ms in 16384-column blocks). ``_layouts`` makes the form where it
measures faster; ``_linear`` reads it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

COLUMNS = "columns"
# Rows of ``W`` transposed at a time when building column blocks (512 x 512 float32 = 1 MiB: in L2).
TRANSPOSE_TILE = 512


def is_columns(w: Any) -> bool:
    return isinstance(w, dict) and set(w) == {COLUMNS} and isinstance(w[COLUMNS], list) and bool(w[COLUMNS]) \
        and all(isinstance(block, Tensor) and block.dim() == 2 for block in w[COLUMNS])


def columns_product(rows: Tensor, blocks: list[Tensor]) -> Tensor:
    """rows (N, in), blocks [(in, b_i), ...] -> (N, sum b_i)."""
    if len(blocks) == 1:
        return torch.mm(rows, blocks[0])  # (N, out)
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
    return out


def transposed_blocks(weight: Tensor, block: int) -> list[Tensor]:
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
