"""T5 relative position buckets and the per-head position bias they index.

Raffel et al. 2020 ("Exploring the Limits of Transfer Learning...", sec. 2.1):
attention logits get a learned scalar per head and per *bucket* of the relative
distance ``key - query``. Half of the buckets are exact small distances, the
rest are logarithmically wider up to ``max_distance``, beyond which all
distances share the last bucket. Bidirectional attention (the encoder) splits
the buckets between "key before query" and "key after query"; causal attention
(the decoder self-attention) only ever sees keys at or before the query.

The arithmetic follows the reference (Mesh TensorFlow / transformers) step for
step -- float32 log, truncation toward zero, clamp -- because any other order
moves distances across bucket boundaries.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def relative_position_bucket(relative_position: Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """Map integer ``key - query`` distances to bucket ids in ``[0, num_buckets)``.

    relative_position: integer tensor of any shape -> long tensor of the same shape.
    """
    relative_position = relative_position.long()
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).long() * num_buckets  # keys after the query use the upper half
        distance = relative_position.abs()
    else:
        offset = torch.zeros_like(relative_position)
        distance = -torch.clamp(relative_position, max=0)  # future keys collapse to distance 0
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # distance 0 gives log(0) = -inf here; the where below discards it, as in the reference.
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    if_large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    if_large = torch.clamp(if_large, max=num_buckets - 1)
    return offset + torch.where(is_small, distance, if_large)


def position_bias(table: Tensor, query_length: int, key_length: int, *, bidirectional: bool,
                  max_distance: int, query_offset: int | Tensor = 0) -> Tensor:
    """Per-head additive attention bias from a learned bucket table.

    table: (num_buckets, H). Queries sit at absolute positions
    ``query_offset + arange(query_length)`` (the offset is the cache position
    when decoding step by step), keys at ``arange(key_length)``.
    Returns (1, H, query_length, key_length).
    """
    device = table.device
    query_pos = torch.arange(query_length, device=device)[:, None] + query_offset  # (Tq, 1)
    key_pos = torch.arange(key_length, device=device)[None, :]  # (1, Tk)
    buckets = relative_position_bucket(key_pos - query_pos, bidirectional=bidirectional,
                                       num_buckets=table.shape[0], max_distance=max_distance)  # (Tq, Tk)
    values = torch.nn.functional.embedding(buckets, table)  # (Tq, Tk, H)
    return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, Tq, Tk)
