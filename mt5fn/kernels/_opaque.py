"""The packed weight-leaf forms as opaque operators, so a compiled graph can hold them.

``torch.compile`` traces ``linear`` like any Python. Three forms call kernels
the compiler cannot lower with the weight as a graph *input* (inductor
lowers oneDNN's linear and quantized linear only for weights it froze
itself): the oneDNN-blocked tensor, the int8 x int8 form and the column
blocks (out-parameter products into slices of one output). Under a compiler,
``linear`` calls them through the custom operators below instead: the graph
keeps each as one call of the kernel the decoding layout chose by
measurement on this machine (``_layouts``), and fuses everything around it.
Eager calls never come here (a custom operator costs a few microseconds of
dispatch, as much as a small decoder product).

One more trap: the compiler's fake tensors report a oneDNN-blocked tensor's
layout as strided, so inside a graph ``linear`` could not tell it from a
plain weight. A compiled step therefore receives its tree through
``box_onednn_leaves``, which wraps each such leaf as ``{"onednn": Tensor}`` -- a key the
compiler sees -- once per ``generate`` call, outside the graph.

Each operator takes the rows ``x (N, in)`` and the leaf's tensors, and
returns ``(N, out)`` in ``x``'s dtype; the fake implementations give the
compiler those shapes without running anything.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _int8_dynamic
from ._columns import columns_product


@torch.library.custom_op("mt5fn::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor) -> Tensor:
    """x (N, in), a oneDNN-blocked (out, in) weight -> (N, out)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("mt5fn::int8_dynamic_linear", mutates_args=())
def int8_dynamic_linear(x: Tensor, packed: Tensor, scale: Tensor) -> Tensor:
    """x (N, in), the int8 x int8 form's packed (in, out) weight and (out,) scales -> (N, out)."""
    return _int8_dynamic.int8_dynamic_linear(x, {"int8_packed": packed, "scale": scale})


@int8_dynamic_linear.register_fake
def _(x: Tensor, packed: Tensor, scale: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], packed.shape[1])


@torch.library.custom_op("mt5fn::columns_linear", mutates_args=())
def columns_linear(x: Tensor, blocks: list[Tensor]) -> Tensor:
    """x (N, in), column blocks of ``W.T`` [(in, b_i), ...] -> (N, sum b_i)."""
    return columns_product(x, blocks)


@columns_linear.register_fake
def _(x: Tensor, blocks: list[Tensor]) -> Tensor:
    return x.new_empty(x.shape[0], sum(block.shape[1] for block in blocks))


ONEDNN_BOX = "onednn"


def box_onednn_leaves(tree: Any) -> Any:
    """``tree`` with each oneDNN-blocked weight leaf as ``{"onednn": leaf}`` (for a compiled step); the
    int8 x int8 form keeps its packed tensor, which its key already names."""
    if isinstance(tree, Tensor):
        return {ONEDNN_BOX: tree} if tree.layout == torch._mkldnn else tree
    if isinstance(tree, dict) and not _int8_dynamic.is_int8_dynamic(tree):
        return {name: box_onednn_leaves(child) for name, child in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(box_onednn_leaves(child) for child in tree)
    return tree
