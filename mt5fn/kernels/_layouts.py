"""Weight-leaf forms made for a known row count: ``relayout_linear`` and ``fuse_outputs``.

A decoding step multiplies a handful of rows by every weight: it is bound by
how fast the weights stream from memory. Which layout streams fastest depends
on the rows, the dtype and the CPU, so ``relayout_linear`` times the
candidates on the running machine (``_choice``) and keeps the fastest; the
forms are those ``linear`` reads (``_linear``'s table).

For example, on a 2-core AMD EPYC (mt5-small head ``[250112, 512]``, fp32): one row
times the head took 100 ms with ``F.linear``, 46 ms with one ``(in, out)``
copy and 22-36 ms in 16384-column blocks (a block's output slice stays in
cache while the input streams through it); at 8 rows oneDNN's prepacked weight
ran 2.5-5x faster than MKL's gemm on the transposed operand.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ._choice import choose, key, probe_rows, time_call
from ._int8_dynamic import available as int8_dynamic_available
from ._int8_dynamic import pack as pack_int8_dynamic
from ._blocks_q8 import stack_q8_0
from ._columns import COLUMNS, transposed_blocks
from ._linear import INT8, SCALE, linear, linear_form

# Below this many elements a weight stays as it is: it sits in cache, a copy buys nothing,
# and the tiny test models then run exactly transformers' kernels.
MIN_PREPARED_NUMEL = 1 << 16
# Output columns per block of a one-row product (64 KiB of float32 output: cache-resident).
OUTPUT_BLOCK = 16384


def _onednn_ready(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def relayout_linear(weight: Any, rows: int | None, *, min_numel: int = MIN_PREPARED_NUMEL,
                    block: int = OUTPUT_BLOCK) -> Any:
    """The weight-leaf form of ``weight`` that multiplies fastest at ``rows`` rows on this machine.

    ``weight``: a dense (out, in) tensor or a weight-only int8 leaf; ``rows``: the rows
    of each product (None: unknown, a few). The candidates are timed with ``linear``
    and the fastest kept (``_choice``: once per machine and product, remembered):

    * float: the tensor itself, column blocks of ``W.T`` (one or two rows), a
      oneDNN-blocked copy (float32 / bfloat16 on the CPU);
    * int8: the weight-only leaf itself (``torch._weight_int8pack_mm`` at few
      rows), int8 x int8 with dynamic activation scales (``_int8_dynamic``).

    In deterministic mode the rule below is taken without timing: column blocks for
    one row in float32, oneDNN for other CPU float products, the int8 leaf as it is
    (the forms that measured fastest on a 2-core AVX512-BF16 EPYC). GPUs, other forms,
    and weights below ``min_numel`` elements keep ``weight``. Pure: never modified.
    """
    form = linear_form(weight)
    if form not in ("dense", "int8"):
        return weight
    values = weight if form == "dense" else weight[INT8]  # (out, in)
    dtype = weight.dtype if form == "dense" else weight[SCALE].dtype  # the compute dtype
    candidates, rule = candidate_forms(weight, rows, block=block)
    if values.numel() < min_numel or len(candidates) == 1:
        return weight
    out_in, device = tuple(values.shape), values.device
    probe = probe_rows(out_in[1], rows, dtype, device)  # (rows, in)
    name = key(form, out_in, dtype, rows, device)
    with torch.no_grad():
        _, chosen = choose(name, candidates, rule, lambda leaf: time_call(lambda: linear(probe, leaf)))
    return chosen


def candidate_forms(weight: Any, rows: int | None, *, block: int = OUTPUT_BLOCK
                    ) -> tuple[dict[str, Callable[[], Any]], str]:
    """The forms ``relayout_linear`` chooses among for ``weight`` at ``rows`` rows, as builders by name,
    and the name its deterministic rule takes. Every form computes ``linear``'s product (the int8
    ones with their quantization error; the spec checks each)."""
    if linear_form(weight) == "int8":
        return _int8_candidates(weight)
    if linear_form(weight) == "dense":
        return _float_candidates(weight, rows, block)
    return {"as is": lambda: weight}, "as is"


def _float_candidates(weight: Tensor, rows: int | None, block: int) -> tuple[dict[str, Callable[[], Any]], str]:
    candidates: dict[str, Callable[[], Any]] = {"dense": lambda: weight}
    if weight.device.type != "cpu":
        return candidates, "dense"
    if rows is not None and rows <= 2:
        candidates["columns"] = lambda: {COLUMNS: transposed_blocks(weight.detach(), block)}
    if _onednn_ready(weight):
        candidates["onednn"] = lambda: torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    if rows == 1 and weight.dtype != torch.bfloat16:
        return candidates, "columns"
    return candidates, "onednn" if "onednn" in candidates else "dense"


def _int8_candidates(weight: dict) -> tuple[dict[str, Callable[[], Any]], str]:
    candidates: dict[str, Callable[[], Any]] = {"int8": lambda: weight}
    if weight[INT8].device.type == "cpu" and int8_dynamic_available():
        candidates["int8-dynamic"] = lambda: pack_int8_dynamic(weight[INT8], weight[SCALE])
    return candidates, "int8"


def fuse_outputs(leaves: list[Any]) -> Any | None:
    """Projections stacked along their outputs into one leaf: dense tensors, or int8 or Q8_0 forms
    (weights and scales; Q8_0's blocks are per row). None for forms that cannot be stacked (packed or
    blocked ones): they stay separate leaves."""
    forms = {linear_form(leaf) for leaf in leaves}
    if forms == {"q8_0"}:
        return stack_q8_0(leaves)
    if forms == {"int8"}:
        return {INT8: torch.cat([leaf[INT8] for leaf in leaves]), SCALE: torch.cat([leaf[SCALE] for leaf in leaves])}
    if forms == {"dense"} and len({leaf.dtype for leaf in leaves}) == 1:
        return torch.cat([leaf.detach() for leaf in leaves])
    return None
