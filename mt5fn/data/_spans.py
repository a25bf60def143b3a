"""T5 span corruption (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", section 3.1.4).

A port of ``t5.data.preprocessors.random_spans_noise_mask``,
``noise_span_to_unique_sentinel`` / ``nonnoise_span_to_unique_sentinel`` and
``random_spans_helper`` with explicit torch randomness:

* ``num_noise = round(length * noise_density)`` clamped to ``[1, length - 1]``;
  ``num_spans = max(round(num_noise / mean_noise_span_length), 1)`` (float32
  arithmetic and round-half-to-even, as TensorFlow does);
* the noise tokens and the kept tokens are each split into ``num_spans``
  positive parts, uniformly over all compositions (T5's random segmentation:
  shuffle ``num_spans - 1`` ones among ``n - 1`` slots, a one marks the start
  of a new part);
* kept and noise spans alternate, starting with a kept span, so the first
  token is kept and the last is noise.

In the inputs each noise span becomes one sentinel, the k-th (k = 1, 2, ...)
being ``vocab_size - k`` (``<extra_id_0>`` is the top id); the targets hold the
complementary replacement: a sentinel for each kept span, then the noise.
Only the tokenizer's ``extra_ids`` top ids are sentinels: an example that
needs more (more noise spans than extra ids, e.g. 114 spans at 2048 tokens
for mT5's 100) is refused rather than numbering ordinary pieces as sentinels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..checks import check_int, check_real


def _check_rates(noise_density: Any, mean_noise_span_length: Any) -> tuple[float, float]:
    return (check_real("noise_density", noise_density, at_least=0.0, below=1.0, words="a float in [0, 1)"),
            check_real("mean_noise_span_length", mean_noise_span_length, at_least=1.0))


def _check_length(length: Any) -> int:
    return check_int("length", length, 0, words="a non-negative int")


def _round32(value: float) -> int:
    """TensorFlow's ``tf.round`` on a float32: round half to even in single precision."""
    return int(torch.round(torch.tensor(value, dtype=torch.float32)).item())


def span_counts(length: int, noise_density: float = 0.15,
                mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """``(num_noise_tokens, num_noise_spans)`` for a sequence of ``length`` tokens (length >= 2).

    Raises ``ValueError`` when the kept tokens cannot form as many spans as the
    noise (very high density with short spans), where T5's own code would fail.
    """
    density32 = torch.tensor(noise_density, dtype=torch.float32)
    num_noise = _round32(float(torch.tensor(float(length), dtype=torch.float32) * density32))
    num_noise = min(max(num_noise, 1), length - 1)
    mean32 = torch.tensor(mean_noise_span_length, dtype=torch.float32)
    num_spans = max(_round32(float(torch.tensor(float(num_noise), dtype=torch.float32) / mean32)), 1)
    if length - num_noise < num_spans:
        raise ValueError(f"noise_density={noise_density!r} with mean_noise_span_length={mean_noise_span_length!r} "
                         f"asks for {num_spans} noise spans in a sequence of length {length}, but only "
                         f"{length - num_noise} tokens are kept to separate them")
    return num_noise, num_spans


def random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None = None) -> Tensor:
    """Split ``num_items`` into ``num_segments`` positive parts, uniformly over compositions.

    T5's ``_random_segmentation``: shuffle a vector with ``num_segments - 1``
    ones among ``num_items - 1`` slots; a one before item ``i`` starts a new
    segment. Returns the segment lengths, a LongTensor (num_segments,).
    """
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} non-empty segments")
    starts = torch.zeros(num_items - 1, dtype=torch.long)  # (n - 1,)
    starts[: num_segments - 1] = 1
    starts = starts[torch.randperm(num_items - 1, generator=generator)]
    segment_id = torch.cat([starts.new_zeros(1), starts]).cumsum(0)  # (n,) which part each item is in
    return torch.bincount(segment_id, minlength=num_segments)  # (num_segments,)


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> Tensor:
    """T5's noise mask: BoolTensor (length,), True where a token is replaced by a sentinel.

    ``noise_density == 0`` returns an all-False mask (T5's special case);
    lengths below 2 are computed as length 2 and truncated, as T5 does, so a
    single token is always kept. Randomness comes only from ``generator``
    (noise parts first, then kept parts).
    """
    length = _check_length(length)
    noise_density, mean_noise_span_length = _check_rates(noise_density, mean_noise_span_length)
    if noise_density == 0.0 or length == 0:
        return torch.zeros(length, dtype=torch.bool)
    padded = max(length, 2)  # avoid degeneracy: at least one kept and one noise token
    num_noise, num_spans = span_counts(padded, noise_density, mean_noise_span_length)
    noise_lengths = random_segmentation(num_noise, num_spans, generator)  # (spans,)
    kept_lengths = random_segmentation(padded - num_noise, num_spans, generator)  # (spans,)
    interleaved = torch.stack([kept_lengths, noise_lengths], dim=1).flatten()  # (2 * spans,) kept, noise, ...
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)  # (padded,)
    return (span_index % 2 == 1)[:length]


def _replace_spans(tokens: Tensor, spans: Tensor, vocab_size: int) -> Tensor:
    """Each run of True in ``spans`` becomes one sentinel (vocab_size - 1, - 2, ...); other tokens stay."""
    previous = torch.cat([spans.new_zeros(1), spans[:-1]])  # (T,) was the token before in a span?
    first = spans & ~previous  # (T,) first token of each span
    later = spans & previous  # (T,) the rest of each span, dropped
    sentinels = vocab_size - torch.cumsum(first.long(), 0)  # (T,) k-th span -> vocab_size - k
    replaced = torch.where(first, sentinels, tokens)  # (T,)
    return replaced[~later]


DEFAULT_EXTRA_IDS = 100  # T5's and mT5's tokenizers


def _num_runs(mask: Tensor) -> int:
    """How many runs of True ``mask`` (T,) holds."""
    previous = torch.cat([mask.new_zeros(1), mask[:-1]])  # (T,)
    return int((mask & ~previous).sum())


def sentinels_needed(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> int:
    """Sentinels one span-corrupted example of ``length`` raw tokens uses: one per noise span
    (inputs) and one per kept span (targets), which are equally many; 1 when nothing is noised."""
    length = _check_length(length)
    noise_density, mean_noise_span_length = _check_rates(noise_density, mean_noise_span_length)
    if length == 0:
        return 0
    if noise_density == 0.0:
        return 1
    return span_counts(max(length, 2), noise_density, mean_noise_span_length)[1]


def span_corruption(tokens: Any, *, vocab_size: int, eos_id: int = 1, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0, generator: torch.Generator | None = None,
                    extra_ids: int | None = None) -> tuple[Tensor, Tensor]:
    """One T5 span-corruption example from a 1-D token sequence (without EOS).

    Returns ``(inputs, targets)``, LongTensors (1-D): the inputs keep the
    unmasked tokens with each noise span replaced by its sentinel; the targets
    hold a sentinel per kept span followed by that span's noise, so sentinel k
    introduces the k-th noise span in both. EOS (``eos_id``) ends both.
    ``vocab_size`` is the tokenizer size including the extra ids; the
    sentinels are the top ids ``vocab_size - 1, vocab_size - 2, ...``, at most
    ``extra_ids`` of them (default: T5's 100, or ``vocab_size`` when smaller;
    pass ``tokenizer.extra_ids``). An example needing more sentinels than that
    raises ``ValueError`` saying how many it needs and how many exist.
    """
    if isinstance(tokens, Tensor):
        if tokens.dim() != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be a 1-D integer tensor, got dtype {tokens.dtype} "
                             f"shape {tuple(tokens.shape)}")
        tokens = tokens.to(torch.long)
    else:
        try:
            tokens = torch.as_tensor(list(tokens), dtype=torch.long)
        except (TypeError, ValueError) as error:
            raise ValueError(f"tokens must be a 1-D sequence of token ids, got {type(tokens).__name__}") from error
    check_int("vocab_size", vocab_size, 2, words="an int >= 2 (tokenizer size incl. extra ids)")
    check_int("eos_id", eos_id, 0, vocab_size - 1, words=f"an int in [0, vocab_size={vocab_size})")
    if extra_ids is None:
        extra_ids = min(DEFAULT_EXTRA_IDS, vocab_size)
    check_int("extra_ids", extra_ids, 0, vocab_size,
              words=f"an int in [0, vocab_size={vocab_size}] (the sentinel count)")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        bad = int(tokens[(tokens < 0) | (tokens >= vocab_size)][0])
        raise ValueError(f"tokens must lie in [0, vocab_size={vocab_size}), got value {bad}")
    noise = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, generator)  # (T,)
    needed = max(_num_runs(noise), _num_runs(~noise)) if len(tokens) else 0
    if needed > extra_ids:
        raise ValueError(f"span corruption of {len(tokens)} tokens needs {needed} sentinels (one per noise span) "
                         f"but the tokenizer has only extra_ids={extra_ids}; use shorter inputs or a tokenizer "
                         "with more extra ids")
    eos = torch.tensor([eos_id], dtype=torch.long)
    inputs = torch.cat([_replace_spans(tokens, noise, vocab_size), eos])
    targets = torch.cat([_replace_spans(tokens, ~noise, vocab_size), eos])
    return inputs, targets


def compute_input_and_target_lengths(inputs_length: int, noise_density: float = 0.15,
                                     mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """T5's ``random_spans_helper``: ``(tokens_length, targets_length)`` for an inputs length.

    ``tokens_length`` is the longest raw chunk whose corrupted inputs (kept
    tokens + one sentinel per span + EOS) fit in ``inputs_length``;
    ``targets_length`` is the exact targets length for that chunk (noise + one
    sentinel per span + EOS). 512 -> (568, 114) with the defaults. The counts
    use the same clamps as the mask, so the lengths are exact for every chunk
    of ``tokens_length`` tokens; with density 0.5, T5's hack trims one token so
    the targets are no longer than the inputs. Raises ``ValueError`` when the
    rates cannot produce a valid mask at that length (see ``span_counts``).
    """
    check_int("inputs_length", inputs_length, 2, words="an int >= 2 (room for a sentinel and EOS)")
    noise_density, mean_noise_span_length = _check_rates(noise_density, mean_noise_span_length)
    if noise_density == 0.0:
        return inputs_length - 1, 2  # nothing is noised: the targets are one sentinel and EOS

    def lengths(tokens_length: int) -> tuple[int, int]:
        if tokens_length < 2:  # the mask keeps a lone token: inputs token + EOS, targets sentinel + EOS
            return tokens_length + 1, tokens_length + 1
        num_noise, num_spans = span_counts(tokens_length, noise_density, mean_noise_span_length)
        # kept and noise spans are equally many, each gets one sentinel on the other side
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    targets_length = lengths(tokens_length)[1]
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length = lengths(tokens_length)[1]  # recomputed (T5 subtracts 1, which can be off)
    return tokens_length, targets_length
