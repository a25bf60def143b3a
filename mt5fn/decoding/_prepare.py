"""``prepare_decoding``: the decoder's weights fused and re-laid-out for token-by-token decoding.

A decoding step multiplies a handful of rows (batch x beams) by every weight of
the decoder and by the ``(V, d)`` head: it is bound by how fast the weights
stream from memory, and by the count of small products. ``prepare_decoding``
returns a new parameter pytree -- plain dicts and lists of tensors, no object
holds weights, nothing is remembered between calls -- in which

* each self-attention's q/k/v is one ``"qkv"`` leaf ``(3 H d_kv, d)``;
* each gated FFN's two input projections are one ``"wi_01"`` leaf ``(2 d_ff, d)``;
* every block's cross-attention K and V is one ``decoder["cross_kv"]`` leaf
  ``(L 2 H d_kv, d)``: one product per input computes all of them;
* each large float matrix takes the weight-leaf form that measured fastest for
  the step's row count (``relayout_linear``): column blocks of ``W.T`` for one
  row on the CPU, a oneDNN-blocked copy for several, the plain tensor on GPUs
  and for small weights. int8 forms (``mt5fn.quantize``) are fused but keep
  their form: ``torch._weight_int8pack_mm`` reads them as they are.

The block functions read every form through ``mt5fn.functional.linear``, so
the prepared tree is accepted wherever ``params`` is, for inference
(``forward``, ``init_cache``, ``decode_step``, ``generate``). The encoder, the
embedding, the norms and the position tables are the input's own tensors (no
copies). Hold the result to pay for it once, as a CTranslate2 user holds a
converted model.

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

from ..kernels import COLUMNS, FUSED_NAMES, INT8, SCALE, linear_form
from ..checks import check_params, check_rows
from ..model import MT5Config, check_config

# Below this many elements a weight stays as it is: it sits in cache, a copy buys nothing,
# and the tiny test models then run exactly transformers' kernels.
MIN_PREPARED_NUMEL = 1 << 16
# Output columns per block of a one-row product (64 KiB of float32 output: cache-resident).
OUTPUT_BLOCK = 16384
# Rows of ``W`` transposed at a time when building column blocks (512 x 512 float32 = 1 MiB: in L2).
TRANSPOSE_TILE = 512


# A re-laid-out copy costs about as much as this many products with the weight as it is (one pass
# over it, measured ~10 for the mt5-small head); it pays off when a call runs more products than that,
# times the rows they save time on. Below that, ``generate`` on plain params only fuses.
_COPY_COST_IN_PRODUCTS = 24


def one_call_min_numel(rows: int, steps: int) -> int:
    """The ``min_numel`` with which ``generate`` prepares plain params for one call of ``steps`` steps
    over ``rows`` rows: re-lay out the large weights when the call is long enough to pay the copies back,
    else only fuse (every weight then keeps its form)."""
    return MIN_PREPARED_NUMEL if rows * steps >= _COPY_COST_IN_PRODUCTS else 1 << 62


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


def is_prepared(params: dict) -> bool:
    """True for a tree made by ``prepare_decoding`` (its decoder holds the fused cross K/V)."""
    decoder = params.get("decoder") if isinstance(params, dict) else None
    return isinstance(decoder, dict) and "cross_kv" in decoder


def _fuse(leaves: list[Any]) -> Any:
    """Stack projections along their outputs: dense tensors, or int8 forms (weights and scales)."""
    if all(linear_form(leaf) == "int8" for leaf in leaves):
        return {INT8: torch.cat([leaf[INT8] for leaf in leaves]), SCALE: torch.cat([leaf[SCALE] for leaf in leaves])}
    forms = {linear_form(leaf) for leaf in leaves}
    if forms != {"dense"}:
        raise ValueError(f"params: cannot fuse projections of forms {sorted(map(str, forms))}; prepare_decoding "
                         "takes float or mt5fn.quantize trees")
    return torch.cat([leaf.detach() for leaf in leaves])


def prepare_decoding(params: dict, cfg: MT5Config, *, rows: int | None = None,
                     min_numel: int = MIN_PREPARED_NUMEL) -> dict:
    """A decoding layout of ``params`` (see the module docstring); ``rows``: rows per step, a hint.

    ``rows`` is the batch times the beams of the ``generate`` calls to come
    (None: unknown, a layout good for a few rows). A tree that is already
    prepared is returned as it is. Weights below ``min_numel`` elements keep
    their form (0 re-lays-out every weight, which the specification uses).
    """
    check_config(cfg)
    check_params(params, cfg)
    check_rows(rows)
    if is_prepared(params):
        return params
    if "decoder" not in params:
        raise ValueError("params: the model has no decoder (an encoder-only tree); prepare_decoding "
                         "lays out a decoder")

    def lay(weight: Tensor, wanted: int | None = rows) -> Any:
        return relayout_linear(weight, wanted, min_numel=min_numel)

    decoder = params["decoder"]
    blocks = []
    with torch.no_grad():
        for block in decoder["blocks"]:
            attn, cross, mlp = block["self_attn"], block["cross_attn"], block["mlp"]
            new = dict(block)
            qkv = FUSED_NAMES[("q", "k", "v")]
            new["self_attn"] = {qkv: lay(_fuse([attn["q"], attn["k"], attn["v"]])), "o": lay(attn["o"])}
            new["cross_attn"] = {"q": lay(cross["q"]), "k": cross["k"], "v": cross["v"], "o": lay(cross["o"])}
            gate_up = FUSED_NAMES[("wi_0", "wi_1")]
            inner = {"wi": lay(mlp["wi"])} if "wi" in mlp else {gate_up: lay(_fuse([mlp["wi_0"], mlp["wi_1"]]))}
            new["mlp"] = {**inner, "wo": lay(mlp["wo"])}
            blocks.append(new)
        # All blocks' cross K and V in one matrix: its row count is batch x source length, not ``rows``.
        cross_kv = _fuse([w for b in decoder["blocks"] for w in (b["cross_attn"]["k"], b["cross_attn"]["v"])])
        prepared_decoder = {**decoder, "blocks": blocks, "cross_kv": lay(cross_kv, None if rows is None
                                                                             else max(rows, 2))}
        head = params.get("lm_head", params["shared"])
        return {**params, "decoder": prepared_decoder, "lm_head": lay(head)}
