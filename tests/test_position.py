"""Example-based checks of the relative position bucket function (the properties are in spec/)."""

from __future__ import annotations

import torch

from mt5fn.functional import relative_position_bucket


def test_bucket_accepts_any_integer_dtype_and_shape():
    """The function is elementwise: any integer tensor shape in, the same shape of int64 out."""
    distance = torch.arange(-30, 30, dtype=torch.int32).reshape(3, 4, 5)
    bucket = relative_position_bucket(distance, True, 32, 128)
    assert bucket.shape == (3, 4, 5) and bucket.dtype == torch.long
    assert torch.equal(bucket.flatten(), relative_position_bucket(distance.flatten().long(), True, 32, 128))
