"""Examples for mt5fn.data: known values, packing, collation and bad input."""

import itertools
import math

import pytest
import torch

from mt5fn.data import (collate, compute_input_and_target_lengths, iter_packed, pack, random_segmentation,
                        random_spans_noise_mask, span_corruption)


def test_length_helper_known_values():
    assert compute_input_and_target_lengths(512) == (568, 114)  # T5's pretraining setting
    assert compute_input_and_target_lengths(1024) == (1137, 229)  # 1137 -> 171 noise, 57 spans
    assert compute_input_and_target_lengths(512, 0.0) == (511, 2)


def test_worked_example():
    """20 tokens at the defaults: 3 noise tokens in 1 span, the last three."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.arange(10, 30)
    inputs, targets = span_corruption(tokens, vocab_size=100, generator=gen)
    assert inputs.tolist() == list(range(10, 27)) + [99, 1]
    assert targets.tolist() == [99, 27, 28, 29, 1]


def test_segmentation_is_uniform_over_compositions():
    """5 items in 3 positive parts: all C(4, 2) = 6 compositions equally likely."""
    gen = torch.Generator().manual_seed(0)
    draws = 3000
    counts: dict = {}
    for _ in range(draws):
        parts = tuple(random_segmentation(5, 3, gen).tolist())
        counts[parts] = counts.get(parts, 0) + 1
    expected = {c for c in itertools.product(range(1, 4), repeat=3) if sum(c) == 5}
    assert set(counts) == expected
    chi2 = sum((n - draws / 6) ** 2 / (draws / 6) for n in counts.values())
    assert chi2 < 20.5  # 5 degrees of freedom, p ~ 0.001


def test_degenerate_lengths_follow_t5():
    assert random_spans_noise_mask(0).tolist() == []
    assert random_spans_noise_mask(1).tolist() == [False]  # computed as length 2, truncated
    assert random_spans_noise_mask(2).tolist() == [False, True]
    assert random_spans_noise_mask(10, noise_density=0.0).tolist() == [False] * 10
    inputs, targets = span_corruption([5, 6, 7], vocab_size=50, noise_density=0.0)
    assert inputs.tolist() == [5, 6, 7, 1] and targets.tolist() == [49, 1]


def test_span_corruption_bad_input():
    with pytest.raises(ValueError, match="noise_density"):
        random_spans_noise_mask(10, noise_density=1.0)
    with pytest.raises(ValueError, match="mean_noise_span_length"):
        random_spans_noise_mask(10, mean_noise_span_length=0.5)
    with pytest.raises(ValueError, match="length"):
        random_spans_noise_mask(-1)
    with pytest.raises(ValueError, match="noise spans"):  # 9 noise tokens in 9 spans, 1 kept token
        random_spans_noise_mask(10, noise_density=0.9, mean_noise_span_length=1.0)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size=50\), got value 50"):
        span_corruption([1, 50], vocab_size=50)
    with pytest.raises(ValueError, match="eos_id"):
        span_corruption([1, 2], vocab_size=50, eos_id=50)
    with pytest.raises(ValueError, match="1-D"):
        span_corruption(torch.zeros(2, 2, dtype=torch.long), vocab_size=50)
    with pytest.raises(ValueError, match="inputs_length"):
        compute_input_and_target_lengths(1)


def test_pack_concatenates_and_drops_the_remainder():
    docs = [[1, 2, 3], torch.tensor([4, 5]), [], range(6, 12)]
    packed = pack(docs, 4)
    assert packed.dtype == torch.long
    assert packed.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 9, 10, 11 dropped
    assert pack(torch.arange(7), 3).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert pack([[1, 2]], 5).shape == (0, 5)
    assert [c.tolist() for c in iter_packed(iter([[1, 2, 3, 4, 5]]), 2)] == [[1, 2], [3, 4]]


def test_pack_bad_input():
    with pytest.raises(ValueError, match="length must be a positive int, got 0"):
        pack([[1, 2]], 0)
    with pytest.raises(ValueError, match=r"token_stream\[1\]"):
        pack([[1, 2], torch.ones(2, 2, dtype=torch.long)], 2)
    with pytest.raises(ValueError, match=r"token_stream\[0\]"):
        pack([torch.ones(3)], 2)


def test_collate_pads_inputs_and_ignores_padded_labels():
    batch = collate([([5, 6, 7, 1], [8, 1]), (torch.tensor([9, 1]), torch.tensor([3, 4, 1]))], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [9, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100], [3, 4, 1]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_bad_input():
    with pytest.raises(ValueError, match="examples is empty"):
        collate([])
    with pytest.raises(ValueError, match=r"examples\[0\] must be an \(inputs, targets\) pair"):
        collate([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"examples\[1\] targets is empty"):
        collate([([1], [1]), ([1], [])])
    with pytest.raises(ValueError, match="pad_id"):
        collate([([1], [1])], pad_id=-1)


def test_pipeline_gives_fixed_shapes():
    """pack to the helper's raw length, corrupt, collate: every row is exactly 32 / targets long."""
    raw, target_len = compute_input_and_target_lengths(32)
    gen = torch.Generator().manual_seed(3)
    docs = [torch.randint(2, 90, (int(n),), generator=gen) for n in torch.randint(5, 60, (20,), generator=gen)]
    pairs = [span_corruption(chunk, vocab_size=100, generator=gen) for chunk in pack(docs, raw)]
    batch = collate(pairs)
    assert batch["input_ids"].shape == (len(pairs), 32) and bool(batch["attention_mask"].all())
    assert batch["labels"].shape == (len(pairs), target_len) and not bool((batch["labels"] == -100).any())
    assert math.isclose(sum(len(d) for d in docs) // raw, len(pairs))
