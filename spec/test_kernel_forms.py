"""Every weight-leaf form the kernel choice can pick computes ``linear``'s product.

``relayout_linear`` keeps whichever candidate form measures fastest on the
running machine (``mt5fn.kernels.candidate_forms`` lists them), so every
candidate must compute the same function, whatever the shape or row count:

* float candidates (the tensor, column blocks, oneDNN-packed) equal
  ``x @ W.T`` to round-off of the dtype;
* the weight-only int8 leaf equals ``x @ deq(W).T`` with ``deq(W) = int8 * scale``
  to the compute dtype's round-off (``|err| <= 2^-7 |x| |deq(W)|`` row by row in
  bfloat16: the output and the accumulated products are rounded once each);
* int8 x int8 with dynamic activation scales adds exactly one more error, the
  rounding of each input row to ``s_row * q`` with ``|x - s_row q| <= s_row / 2``:
  ``|err_i| <= s_row / 2 * sum_j |deq(W)_ij|`` plus the same output rounding.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import mt5fn
from mt5fn.kernels import candidate_forms, linear, linear_form


@given(st.integers(1, 40), st.sampled_from([16, 32, 48]), st.sampled_from([None, 1, 2, 5]),
       st.sampled_from([torch.float32, torch.bfloat16]), st.integers(0, 2 ** 16))
def test_every_float_candidate_equals_linear(out_features, in_features, rows, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
    x = torch.randn(1 if rows is None else rows, 1, in_features, generator=generator).to(dtype)
    expected = (x.double() @ weight.double().T)  # (rows, 1, out)
    magnitude = x.double().abs() @ weight.double().abs().T
    unit = torch.finfo(dtype).eps
    candidates, rule = candidate_forms(weight, rows, block=7)
    assert rule in candidates
    for name, build in candidates.items():
        got = linear(x, build()).double()
        assert ((got - expected).abs() <= 2 * unit * magnitude + 1e-6).all(), name


@given(st.integers(1, 40), st.sampled_from([16, 32, 64]), st.sampled_from([1, 3, 8]), st.integers(0, 2 ** 16))
def test_every_int8_candidate_equals_the_dequantized_product(out_features, in_features, rows, seed):
    generator = torch.Generator().manual_seed(seed)
    leaf = mt5fn.quant.quantize_weight(torch.randn(out_features, in_features, generator=generator))
    compute = leaf["scale"].dtype
    x = torch.randn(rows, in_features, generator=generator).to(compute)  # (rows, in)
    dequantized = leaf["int8"].double() * leaf["scale"].double()[:, None]  # (out, in), the weight it stands for
    expected = x.double() @ dequantized.T  # (rows, out)
    magnitude = x.double().abs() @ dequantized.abs().T  # (rows, out)
    rounding = 2 * torch.finfo(compute).eps * magnitude + 1e-6
    row_step = x.double().abs().amax(-1, keepdim=True) / 127  # (rows, 1): s_row
    activation = row_step / 2 * dequantized.abs().sum(-1)[None, :]  # (rows, out)
    candidates, rule = candidate_forms(leaf, rows)
    assert rule == "int8"
    for name, build in candidates.items():
        form = build()
        got = linear(x, form).double()
        bound = rounding + (activation if linear_form(form) == "int8-dynamic" else 0.0)
        assert ((got - expected).abs() <= bound).all(), (name, (got - expected).abs().max())
