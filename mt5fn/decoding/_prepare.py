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
* each large matrix takes the weight-leaf form that measures fastest on this
  machine for the step's row count (``relayout_linear`` times the candidates:
  the tensor, column blocks of ``W.T``, a oneDNN-blocked copy); the plain
  tensor on GPUs and for small weights. int8 forms (``mt5fn.quantize``) are fused, then offered
  the int8 x int8 form beside their own. Forms that cannot be stacked (packed
  ones, in a tree laid out before) stay separate leaves.

The forms are made by ``mt5fn.kernels`` (``relayout_linear``, ``fuse_outputs``),
and the block functions read every form through ``kernels.linear``, so
the prepared tree is accepted wherever ``params`` is, for inference
(``forward``, ``init_cache``, ``decode_step``, ``generate``). The encoder, the
embedding, the norms and the position tables are the input's own tensors (no
copies). Hold the result to pay for it once, as a CTranslate2 user holds a
converted model.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..kernels import FUSED_NAMES, MIN_PREPARED_NUMEL, fuse_outputs, relayout_linear
from ..checks import check_params, check_rows
from ..model import MT5Config, check_config
from ._threads import intra_op_threads, loop_threads

# A re-laid-out copy costs about as much as this many products with the weight as it is (one pass
# over it, measured ~10 for the mt5-small head); it pays off when a call runs more products than that,
# times the rows they save time on. Below that, ``generate`` on plain params only fuses.
_COPY_COST_IN_PRODUCTS = 24


def one_call_min_numel(rows: int, steps: int) -> int:
    """The ``min_numel`` with which ``generate`` prepares plain params for one call of ``steps`` steps
    over ``rows`` rows: re-lay out the large weights when the call is long enough to pay the copies back,
    else only fuse (every weight then keeps its form)."""
    return MIN_PREPARED_NUMEL if rows * steps >= _COPY_COST_IN_PRODUCTS else 1 << 62


def is_prepared(params: dict) -> bool:
    """True for a tree made by ``prepare_decoding`` (its decoder holds the fused cross K/V)."""
    decoder = params.get("decoder") if isinstance(params, dict) else None
    return isinstance(decoder, dict) and "cross_kv" in decoder


def prepare_decoding(params: dict, cfg: MT5Config, *, rows: int | None = None,
                     min_numel: int = MIN_PREPARED_NUMEL) -> dict:
    """A decoding layout of ``params`` (see the module docstring); ``rows``: rows per step, a hint.

    ``rows`` is the batch times the beams of the ``generate`` calls to come
    (None: unknown, a layout good for a few rows). A tree that is already
    prepared is returned as it is. Weights below ``min_numel`` elements keep
    their form (0 re-lays-out every weight, which the specification uses).
    """
    check_config(cfg)
    check_params(params, cfg, differentiates=False)
    check_rows(rows)
    if is_prepared(params):
        return params
    if "decoder" not in params:
        raise ValueError("params: the model has no decoder (an encoder-only tree); prepare_decoding "
                         "lays out a decoder")
    return lay_out(params, rows, min_numel)


def lay_out(params: dict, rows: int | None, min_numel: int) -> dict:
    """``prepare_decoding`` of a checked, unprepared tree with a decoder."""

    def lay(weight: Tensor, wanted: int | None = rows) -> Any:
        return relayout_linear(weight, wanted, min_numel=min_numel)

    decoder = params["decoder"]
    blocks = []
    # The kernel choice times each form on the threads its products will run on: a step's block
    # products on a fixed MT5FN_DECODE_LOOP_THREADS or else all of them (what StepThreads picks on an
    # idle CPU), the head and the cross K/V on all of them (_threads).
    with torch.no_grad(), intra_op_threads(loop_threads() or torch.get_num_threads()):
        for block in decoder["blocks"]:
            attn, cross, mlp = block["self_attn"], block["cross_attn"], block["mlp"]
            new = dict(block)
            new["self_attn"] = {**_fused(attn, ("q", "k", "v"), lay), "o": lay(attn["o"])}
            new["cross_attn"] = {"q": lay(cross["q"]), "k": cross["k"], "v": cross["v"], "o": lay(cross["o"])}
            inner = {"wi": lay(mlp["wi"])} if "wi" in mlp else _fused(mlp, ("wi_0", "wi_1"), lay)
            new["mlp"] = {**inner, "wo": lay(mlp["wo"])}
            blocks.append(new)
    with torch.no_grad():
        prepared_decoder = {**decoder, "blocks": blocks}
        # All blocks' cross K and V in one matrix: its row count is batch x source length, not ``rows``.
        cross_kv = fuse_outputs([w for b in decoder["blocks"] for w in (b["cross_attn"]["k"], b["cross_attn"]["v"])])
        if cross_kv is not None:  # (packed forms cannot be stacked: the cache then projects block by block)
            prepared_decoder["cross_kv"] = lay(cross_kv, None if rows is None else max(rows, 2))
        head = params.get("lm_head", params["shared"])
        return {**params, "decoder": prepared_decoder, "lm_head": lay(head)}


def _fused(p: dict, names: tuple[str, ...], lay: Callable[[Any], Any]) -> dict:
    """``names``' projections as one laid-out fused leaf, or each laid out alone where they cannot be stacked."""
    fused = fuse_outputs([p[name] for name in names])
    if fused is None:
        return {name: lay(p[name]) for name in names}
    return {FUSED_NAMES[names]: lay(fused)}
