"""The relative position bias depends only on ``key - query`` (Raffel et al. 2020, sec. 2.1;
Shaw et al. 2018).

``position_bias(table, Tq, Tk, query_offset=o)[0, h, i, j] = table[bucket(j - (o + i)), h]``:
a Toeplitz matrix per head. Hence shifting queries and keys by the same
amount leaves every entry unchanged, and a query offset (the cache position
while decoding step by step) is the same as slicing the rows of a longer bias.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from mt5fn.functional import position_bias, relative_position_bucket
from spec.strategies import bucket_settings

lengths = st.integers(1, 12)
offsets = st.integers(0, 40)


@st.composite
def tables(draw):
    """A (num_buckets, H) float64 table with distinct entries, plus its max_distance."""
    num_buckets, max_distance = draw(bucket_settings(max_buckets=32))
    heads = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 16))
    table = torch.randn(num_buckets, heads, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return table, max_distance


@given(tables(), lengths, lengths, st.booleans())
def test_bias_is_toeplitz(table_and_distance, query_length, key_length, bidirectional):
    """Entry (i, j) equals entry (i + 1, j + 1): only ``j - i`` matters, and it is
    the table row of ``bucket(j - i)``."""
    table, max_distance = table_and_distance
    bias = position_bias(table, query_length, key_length, bidirectional=bidirectional,
                         max_distance=max_distance)  # (1, H, Tq, Tk)
    assert bias.shape == (1, table.shape[1], query_length, key_length)
    assert torch.equal(bias[..., 1:, 1:], bias[..., :-1, :-1])
    distance = torch.arange(key_length)[None, :] - torch.arange(query_length)[:, None]  # (Tq, Tk)
    bucket = relative_position_bucket(distance, bidirectional, table.shape[0], max_distance)
    assert torch.equal(bias[0], table[bucket].permute(2, 0, 1))


@given(tables(), lengths, lengths, offsets, st.booleans())
def test_shifting_queries_and_keys_together_changes_nothing(table_and_distance, query_length, key_length,
                                                           shift, bidirectional):
    """Queries at ``s + i`` against keys at ``s + j`` see the same bias as ``i`` against ``j``."""
    table, max_distance = table_and_distance
    kwargs = dict(bidirectional=bidirectional, max_distance=max_distance)
    plain = position_bias(table, query_length, key_length, **kwargs)  # (1, H, Tq, Tk)
    shifted = position_bias(table, query_length, shift + key_length, query_offset=shift, **kwargs)
    assert torch.equal(shifted[..., shift:], plain)


@given(tables(), lengths, lengths, offsets, st.booleans(), st.booleans())
def test_query_offset_is_a_row_slice(table_and_distance, query_length, key_length, offset, bidirectional,
                                     tensor_offset):
    """``query_offset=o`` gives rows ``o .. o + Tq`` of the bias of ``o + Tq`` queries,
    whether ``o`` is a Python int or a 0-d tensor (the cache position)."""
    table, max_distance = table_and_distance
    kwargs = dict(bidirectional=bidirectional, max_distance=max_distance)
    full = position_bias(table, offset + query_length, key_length, **kwargs)  # (1, H, o+Tq, Tk)
    query_offset = torch.tensor(offset) if tensor_offset else offset
    sliced = position_bias(table, query_length, key_length, query_offset=query_offset, **kwargs)
    assert torch.equal(sliced, full[..., offset:, :])
