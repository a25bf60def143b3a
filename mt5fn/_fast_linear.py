"""Linear layers re-laid-out once for token-by-token decoding.

A decoding step multiplies a handful of rows (batch x beams) by every weight of
the decoder and by the ``(V, d)`` head: the step is bound by how fast the
weights stream from memory, not by arithmetic. ``F.linear(x, W)`` with
``W = [out, in]`` reaches BLAS as a transposed operand, and on the CPU that
path runs well under the memory bandwidth (measured on a 2-core AMD EPYC,
mt5-small head ``[250112, 512]``: 100 ms per row against 46 ms for ``x @ W_t``
with a contiguous ``[in, out]`` copy; at 8 rows MKL's gemm on that CPU reaches
~10 GFLOP/s while oneDNN with a prepacked weight runs 2.5-5x faster).

``PreparedLinear`` therefore picks, once, a layout for a known number of rows:

* one row on the CPU: a contiguous ``[in, out]`` copy, multiplied with ``mm``
  (BLAS' streaming gemv);
* several rows on the CPU (float32 / bfloat16): a oneDNN-blocked copy from
  ``torch.ops.mkldnn._reorder_linear_weight``, multiplied with
  ``torch.ops.mkldnn._linear_pointwise`` (the kernels inductor uses when it
  freezes weights);
* anything else (GPU, small weights, no oneDNN): ``F.linear`` on the weight
  itself, no copy.

Small weights keep ``F.linear``: they sit in cache, a copy buys nothing, and the
tiny test models then run exactly transformers' kernels. The copies live in the
generation state, never in the parameter pytree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this many elements a weight stays as it is (see the module docstring).
MIN_PREPARED_NUMEL = 1 << 16
# Output columns per block of a one-row product (64 KiB of float32 output: cache-resident).
OUTPUT_BLOCK = 16384


def _onednn_ready(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PreparedLinear:
    """``x @ weight.T`` for inputs of ``rows`` rows, in the fastest layout found for them.

    weight: (out, in). ``__call__``: (rows, in) -> (rows, out); other row counts
    still work (oneDNN re-blocks on the fly), only slower.
    """

    def __init__(self, weight: Tensor, rows: int, *, min_numel: int = MIN_PREPARED_NUMEL) -> None:
        self.out_features, self.in_features = weight.shape
        self.kind = "linear"
        self.weight = weight
        if weight.numel() < min_numel:
            return
        if weight.device.type == "cpu" and rows == 1:
            # Column blocks, each contiguous: a block's slice of the output stays in cache while
            # every input row streams through it (one (in, out) matrix would sweep the whole output
            # once per input row: 39 ms against 22 ms for the mt5-small head).
            self.kind = "transposed"
            self.blocks = [block.contiguous() for block in weight.t().split(OUTPUT_BLOCK, dim=1)]  # (in, <=blk)
            self.weight = self.blocks[0]
        elif _onednn_ready(weight):
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
            except RuntimeError:  # a build whose oneDNN refuses this shape: keep F.linear
                return
            self.kind, self.weight = "onednn", packed

    def __call__(self, x: Tensor) -> Tensor:
        """x: (..., in) -> (..., out)."""
        if self.kind == "linear":
            return F.linear(x, self.weight)  # (..., out)
        rows = x.reshape(-1, self.in_features)  # (N, in)
        if self.kind == "transposed":
            if len(self.blocks) == 1:
                out = torch.mm(rows, self.weight)  # (N, out)
            else:
                out = rows.new_empty(rows.shape[0], self.out_features)  # (N, out)
                start = 0
                for block in self.blocks:
                    end = start + block.shape[1]
                    if rows.shape[0] == 1:
                        torch.mm(rows, block, out=out[:, start:end])  # a contiguous slice for one row
                    else:
                        out[:, start:end] = torch.mm(rows, block)
                    start = end
        else:
            out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, None, "none", [], "")  # (N, out)
        return out.view(*x.shape[:-1], self.out_features)
