"""Data for training T5: readers for every file format, span corruption (the T5 pretraining
objective), packing, examples with a truncation summary, batch order, streaming, collation.

    records = read_records(["train.jsonl"], Fields("supervised"))        # or .txt/.tsv/.parquet/folders/globs
    examples = build_examples(records.items, tok, "supervised", max_input_length=64,
                              max_target_length=32, seed=0)             # examples.summary: truncation shares
    raw_len, target_len = compute_input_and_target_lengths(512)        # 568, 114
    for chunk in pack(documents, raw_len):
        inputs, targets = span_corruption(chunk, vocab_size=len(tok), extra_ids=tok.extra_ids, generator=g)
    batch = collate(pairs, pad_id=0)   # input_ids, attention_mask, labels (-100 padded)
"""

from ._collate import collate
from ._examples import (DataSummary, Examples, build_examples, check_lengths, encode_texts, longest_fitting,
                        mix_seed, span_lengths, truncate)
from ._fingerprint import data_fingerprint
from ._packing import iter_packed, pack, pack_pairs
from ._plan import BatchPlan, check_geometry, make_batch, split_global_batch
from ._readers import Bad, DataError, Fields, Records, expand_paths, kind_of, open_source, read_records
from ._spans import (compute_input_and_target_lengths, random_segmentation, random_spans_noise_mask,
                     sentinels_needed, span_corruption, span_counts)
from ._streaming import ExampleStream, stream_fingerprint

__all__ = [
    "Bad", "BatchPlan", "DataError", "DataSummary", "ExampleStream", "Examples", "Fields", "Records",
    "build_examples", "check_geometry", "check_lengths", "collate", "compute_input_and_target_lengths",
    "data_fingerprint", "encode_texts", "expand_paths", "iter_packed", "kind_of", "longest_fitting", "make_batch",
    "mix_seed", "open_source", "pack", "pack_pairs", "random_segmentation", "random_spans_noise_mask",
    "read_records", "sentinels_needed", "span_corruption", "span_counts", "span_lengths", "split_global_batch",
    "stream_fingerprint", "truncate",
]
