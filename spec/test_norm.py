"""Properties of T5's RMSNorm (Zhang & Sennrich 2019; T5LayerNorm in transformers).

``rms_norm(w, x, eps) = w * x / sqrt(mean(x**2) + eps)`` over the last axis,
with no mean subtraction and no bias. The mean square is accumulated in at
least float32 (transformers upcasts half inputs); float64 inputs keep
float64 statistics, so the float64 properties below hold to 1e-12 relative.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from mt5fn.functional import rms_norm

RTOL = 1e-12  # float64 round-off


@st.composite
def norm_inputs(draw, *, min_scale: float = 1e-2):
    """(weight (d,), hidden (..., d)) in float64; ``hidden`` has rows of scale >= ``min_scale``."""
    d = draw(st.integers(1, 32))
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    seed = draw(st.integers(0, 2 ** 16))
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, generator=generator, dtype=torch.float64)
    hidden = torch.randn(*lead, d, generator=generator, dtype=torch.float64)  # (..., d)
    hidden = hidden + torch.where(hidden >= 0, 1.0, -1.0)  # keep every row away from zero
    scale = draw(st.floats(min_scale, 1e3))
    return weight, hidden * scale


positive_factors = st.floats(1e-2, 1e3)


@given(norm_inputs(), positive_factors, st.sampled_from([1e-6, 1e-3, 1.0]))
def test_rescaling_the_input_equals_rescaling_eps(inputs, factor, eps):
    """Exact form of scale invariance: ``rms_norm(w, c x, eps) = rms_norm(w, x, eps / c**2)``
    for every ``c > 0``, since ``c x / sqrt(c**2 ms + eps) = x / sqrt(ms + eps / c**2)``."""
    weight, hidden = inputs
    torch.testing.assert_close(rms_norm(weight, factor * hidden, eps), rms_norm(weight, hidden, eps / factor ** 2),
                               rtol=RTOL, atol=0.0)


@given(norm_inputs(min_scale=1.0), positive_factors)
def test_invariant_to_positive_rescaling(inputs, factor):
    """``rms_norm(w, c x) = rms_norm(w, x)`` for ``c > 0`` when eps is negligible against the
    mean square: inputs have mean square >= 1 (>= 1e-4 after rescaling) and eps = 1e-30,
    so the eps term moves the result by at most 1e-26 relative."""
    weight, hidden = inputs
    eps = 1e-30
    torch.testing.assert_close(rms_norm(weight, factor * hidden, eps), rms_norm(weight, hidden, eps),
                               rtol=RTOL, atol=0.0)


@given(norm_inputs(), st.sampled_from([1e-6, 1e-3, 1.0]))
def test_output_mean_square_follows_the_weight(inputs, eps):
    """With unit weight the output's mean square is ``ms / (ms + eps)`` (1 when eps -> 0);
    a weight multiplies each feature: ``rms_norm(w, x) = w * rms_norm(1, x)``."""
    weight, hidden = inputs
    unit = rms_norm(torch.ones_like(weight), hidden, eps)  # (..., d)
    mean_square = hidden.pow(2).mean(-1)
    torch.testing.assert_close(unit.pow(2).mean(-1), mean_square / (mean_square + eps), rtol=RTOL, atol=0.0)
    torch.testing.assert_close(rms_norm(weight, hidden, eps), weight * unit, rtol=RTOL, atol=0.0)


@given(norm_inputs(), st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
def test_output_dtype_is_the_weight_dtype_for_matching_inputs(inputs, dtype):
    """Inputs and weight of one dtype give that dtype back (half precision included: the
    float32 statistics are cast back before the scale, as in transformers)."""
    weight, hidden = inputs
    out = rms_norm(weight.to(dtype), hidden.to(dtype))
    assert out.dtype == dtype and out.shape == hidden.shape
