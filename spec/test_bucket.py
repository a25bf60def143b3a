"""Properties of T5's relative position buckets (Raffel et al. 2020, sec. 2.1).

For a distance ``d = key - query`` the bucket function works on ``n`` buckets
(``n = num_buckets // 2`` per direction when bidirectional, ``num_buckets``
when causal) and an exact region ``max_exact = n // 2``:

    bucket(d) = offset + |d|                                             if |d| < max_exact
              = offset + min(n - 1, max_exact + trunc(log(|d| / max_exact)
                                     / log(max_distance / max_exact) * (n - max_exact)))  otherwise

with ``offset = n`` for keys after the query in the bidirectional case, and
(causal) ``|d|`` replaced by ``max(-d, 0)`` so that future keys fall in bucket 0.
Every property holds for ``max_distance > max_exact`` (see ``bucket_settings``).
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from mt5fn.functional import relative_position_bucket
from spec.strategies import bucket_settings

bidirectional_flags = st.booleans()


def _halves(num_buckets: int, bidirectional: bool) -> tuple[int, int]:
    """(buckets per direction, max_exact)."""
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    return per_direction, per_direction // 2


def _distances(max_distance: int) -> torch.Tensor:
    """Every integer distance in [-3 max_distance, 3 max_distance], plus far outliers."""
    span = 3 * max_distance
    far = torch.tensor([-(10 ** 7), -(10 ** 5), 10 ** 5, 10 ** 7])
    return torch.cat([torch.arange(-span, span + 1), far])


@given(bucket_settings(), bidirectional_flags, st.lists(st.integers(-(10 ** 9), 10 ** 9), max_size=20))
def test_bucket_range(settings, bidirectional, extra):
    """Every distance, however large, maps into ``[0, num_buckets)``."""
    num_buckets, max_distance = settings
    distance = torch.cat([_distances(max_distance), torch.tensor(extra, dtype=torch.long)])
    bucket = relative_position_bucket(distance, bidirectional, num_buckets, max_distance)
    assert bucket.dtype == torch.long and bucket.shape == distance.shape
    assert int(bucket.min()) >= 0 and int(bucket.max()) < num_buckets


@given(bucket_settings(), bidirectional_flags)
def test_bucket_monotone_in_absolute_distance(settings, bidirectional):
    """Within one direction the bucket never decreases as ``|key - query|`` grows.

    Bidirectional: separately for keys after the query (d > 0, increasing d)
    and at/before it (d <= 0, decreasing d). Causal: for d <= 0 (d > 0 is
    constant 0, checked by ``test_causal_future_is_bucket_zero``).
    """
    num_buckets, max_distance = settings
    span = 3 * max_distance
    before = relative_position_bucket(-torch.arange(0, span + 1), bidirectional, num_buckets, max_distance)
    assert bool((before[1:] >= before[:-1]).all()), before
    if bidirectional:
        after = relative_position_bucket(torch.arange(1, span + 1), True, num_buckets, max_distance)
        assert bool((after[1:] >= after[:-1]).all()), after


@given(bucket_settings(), bidirectional_flags)
def test_bucket_identity_on_exact_region(settings, bidirectional):
    """Small distances get a bucket of their own: ``|d| < max_exact`` maps to ``|d|``
    (plus ``num_buckets // 2`` for keys after the query when bidirectional)."""
    num_buckets, max_distance = settings
    per_direction, max_exact = _halves(num_buckets, bidirectional)
    magnitude = torch.arange(max_exact)
    before = relative_position_bucket(-magnitude, bidirectional, num_buckets, max_distance)
    assert torch.equal(before, magnitude)
    if bidirectional:
        after = relative_position_bucket(magnitude[1:], True, num_buckets, max_distance)
        assert torch.equal(after, magnitude[1:] + per_direction)
    # The exact region is exactly that: the first distance outside it gets bucket >= max_exact.
    first_log = relative_position_bucket(torch.tensor([-max_exact]), bidirectional, num_buckets, max_distance)
    assert int(first_log) == max_exact


@given(bucket_settings(), st.lists(st.integers(-(10 ** 6), 10 ** 6), min_size=1, max_size=30))
def test_bidirectional_direction_split(settings, extra):
    """Bidirectional: keys after the query (d > 0) use the upper half
    ``[num_buckets // 2, 2 (num_buckets // 2))``, keys at or before it the lower half
    ``[0, num_buckets // 2)``."""
    num_buckets, max_distance = settings
    half = num_buckets // 2
    distance = torch.cat([_distances(max_distance), torch.tensor(extra, dtype=torch.long)])
    bucket = relative_position_bucket(distance, True, num_buckets, max_distance)
    after = distance > 0
    assert bool((bucket[after] >= half).all()) and bool((bucket[after] < 2 * half).all())
    assert bool((bucket[~after] < half).all())


@given(bucket_settings(), st.lists(st.integers(1, 10 ** 9), min_size=1, max_size=30))
def test_causal_future_is_bucket_zero(settings, future):
    """Causal: a key after the query (d > 0) is never attended and gets bucket 0,
    the same as d = 0; every other bucket is reached only by past keys."""
    num_buckets, max_distance = settings
    distance = torch.cat([torch.arange(1, 3 * max_distance + 1), torch.tensor(future, dtype=torch.long)])
    bucket = relative_position_bucket(distance, False, num_buckets, max_distance)
    assert bool((bucket == 0).all())
    assert int(relative_position_bucket(torch.tensor([0]), False, num_buckets, max_distance)) == 0


@given(bucket_settings(), bidirectional_flags, st.lists(st.integers(0, 10 ** 9), max_size=20))
def test_bucket_saturates_beyond_max_distance(settings, bidirectional, extra):
    """All ``|d| >= max_distance`` share the last bucket of their half:
    ``n - 1`` for keys at/before the query, ``2n - 1`` for keys after it
    (bidirectional, ``n = num_buckets // 2``); causal: ``num_buckets - 1``."""
    num_buckets, max_distance = settings
    per_direction, _ = _halves(num_buckets, bidirectional)
    magnitude = torch.cat([torch.arange(max_distance, 3 * max_distance + 1),
                           max_distance + torch.tensor(extra, dtype=torch.long)])
    before = relative_position_bucket(-magnitude, bidirectional, num_buckets, max_distance)
    assert bool((before == per_direction - 1).all()), before
    if bidirectional:
        after = relative_position_bucket(magnitude, True, num_buckets, max_distance)
        assert bool((after == 2 * per_direction - 1).all()), after
