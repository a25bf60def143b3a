"""The kernel layer: the only room that knows weight-leaf forms and picks kernels.

The block math in ``mt5fn.functional`` reads one weight form and asks this
room for every product: ``linear`` (any weight-leaf form: dense, oneDNN-packed,
column blocks, int8), ``project`` (several projections, fused or not), the
attention kernel (``fused_attention`` where it computes the same function) and
the fused, chunked cross-entropy of the vocabulary head. The forms themselves
are made here too (``relayout_linear``, ``fuse_outputs``), for the row count
a decoding step will use, by timing the candidates on the running machine
(``kernel_choice``: once per machine and product, remembered in memory and in
a cache file; ``MT5FN_KERNEL_CACHE=off|deterministic``). The questions "is
this call under ``vmap`` / forward-mode AD / a compiler?" are answered here
too (``_transforms``), so kernel choice and boundary checks never disagree.
"""

from ._attention import fused_attention, fused_attention_applies
from ._cross_entropy import IGNORE_INDEX, chunk_bytes, fused_loss_applies, linear_cross_entropy
from . import _choice as kernel_choice
from ._layouts import MIN_PREPARED_NUMEL, OUTPUT_BLOCK, candidate_forms, fuse_outputs, relayout_linear
from ._linear import COLUMNS, INT8, SCALE, dequantize_int8, linear, linear_dtype, linear_form, linear_shape
from ._opaque import box_onednn_leaves
from ._projections import FUSED_NAMES, project
from ._transforms import is_plain_eager, plain_or_one_grad, under_batching_or_forward_ad, under_functorch

__all__ = ["COLUMNS", "box_onednn_leaves", "FUSED_NAMES", "IGNORE_INDEX", "INT8", "MIN_PREPARED_NUMEL", "OUTPUT_BLOCK", "SCALE",
           "candidate_forms", "chunk_bytes", "dequantize_int8", "fuse_outputs", "fused_attention",
           "fused_attention_applies", "fused_loss_applies", "is_plain_eager", "kernel_choice", "linear",
           "linear_cross_entropy", "linear_dtype", "linear_form", "linear_shape", "plain_or_one_grad", "project",
           "under_batching_or_forward_ad", "under_functorch"]
