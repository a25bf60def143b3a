"""Data for training T5: span corruption (the T5 pretraining objective),
packing of a token stream into fixed-length examples, and batch collation.

    raw_len, target_len = compute_input_and_target_lengths(512)        # 568, 114
    for chunk in pack(documents, raw_len):
        inputs, targets = span_corruption(chunk, vocab_size=len(tok), generator=g)
    batch = collate(pairs, pad_id=0)   # input_ids, attention_mask, labels (-100 padded)
"""

from ._collate import collate
from ._packing import iter_packed, pack
from ._spans import (compute_input_and_target_lengths, random_segmentation, random_spans_noise_mask,
                     span_corruption, span_counts)

__all__ = [
    "collate", "compute_input_and_target_lengths", "iter_packed", "pack", "random_segmentation",
    "random_spans_noise_mask", "span_corruption", "span_counts",
]
