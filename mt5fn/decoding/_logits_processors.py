"""Score processors applied before each token choice, in transformers' order.

``process`` runs, on the (N, V) scores of the next token given the decoder
ids so far (N, t) -- decoder start token included:

1. repetition penalty (Keskar et al. 2019, CTRL sec. 4.1): a token already in
   the sequence has its score divided by the penalty when positive,
   multiplied when negative;
2. no-repeat n-gram (Paulus et al. 2017): a token that would complete an
   n-gram already present is banned;
3. minimum new tokens: EOS is banned while fewer than ``min_new_tokens``
   tokens were generated;
4. sampling only: temperature, top-k (Fan et al. 2018), top-p / nucleus
   (Holtzman et al. 2019).

Banned tokens get ``-inf``; the arithmetic of each step follows transformers'
processors so scores and choices agree with its ``generate``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class Processing:
    """The score processing of one ``generate`` call (already validated)."""

    eos_token_id: int | tuple[int, ...]  # every id that ends a sequence (a config may list several)
    min_new_tokens: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_tokens_to_keep: int = 1  # beam sampling keeps 2 so a non-EOS continuation always survives


def repetition_penalty(sequences: Tensor, scores: Tensor, penalty: float) -> Tensor:
    """sequences: (N, t); scores: (N, V) -> (N, V) with every seen token penalised once."""
    seen = torch.gather(scores, 1, sequences)  # (N, t)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, sequences, seen)


def no_repeat_ngram(sequences: Tensor, scores: Tensor, size: int) -> Tensor:
    """Ban the tokens that would repeat an n-gram of ``size`` already in ``sequences`` (N, t)."""
    length, vocab = sequences.shape[1], scores.shape[1]
    if length < size:
        return scores
    grams = sequences.unfold(1, size, 1)  # (N, t - size + 1, size)
    context = sequences[:, length - size + 1:]  # (N, size - 1): the n-gram the next token would end
    repeats = (grams[..., :-1] == context[:, None, :]).all(dim=-1)  # (N, windows)
    # Scatter the banned continuations; non-matching windows write into a spare column V.
    banned = scores.new_zeros(scores.shape[0], vocab + 1, dtype=torch.bool)
    banned.scatter_(1, torch.where(repeats, grams[..., -1], vocab), True)
    return scores.masked_fill(banned[:, :vocab], -float("inf"))


def top_k_filter(scores: Tensor, top_k: int, min_keep: int = 1) -> Tensor:
    """Keep the ``top_k`` best scores of each row (ties with the k-th kept), ``-inf`` elsewhere."""
    k = min(max(top_k, min_keep), scores.shape[-1])
    threshold = torch.topk(scores, k)[0][..., -1:]  # (N, 1)
    return scores.masked_fill(scores < threshold, -float("inf"))


def top_p_filter(scores: Tensor, top_p: float, min_keep: int = 1) -> Tensor:
    """Keep the smallest set of best tokens whose probability reaches ``top_p``, ``-inf`` elsewhere."""
    ascending, order = torch.sort(scores, descending=False)  # (N, V)
    mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)  # cumulative probability up to each token
    drop = mass_below <= (1 - top_p)
    drop[..., -min_keep:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def process(spec: Processing, sequences: Tensor, scores: Tensor, generated: int) -> Tensor:
    """Apply ``spec`` to the scores (N, V) of the next token after ``sequences`` (N, 1 + generated).

    ``scores`` may be modified in place (the decoding loops pass tensors they own).
    """
    if spec.repetition_penalty != 1.0:
        scores = repetition_penalty(sequences, scores, spec.repetition_penalty)
    if spec.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(sequences, scores, spec.no_repeat_ngram_size)
    if generated < spec.min_new_tokens:
        ids = spec.eos_token_id
        scores[:, list(ids) if isinstance(ids, tuple) else ids] = -float("inf")  # in place: the loops own their score tensors
    if spec.do_sample:
        if spec.temperature != 1.0:
            scores = scores / spec.temperature
        if spec.top_k is not None:
            scores = top_k_filter(scores, spec.top_k, spec.min_tokens_to_keep)
        if spec.top_p is not None and spec.top_p < 1.0:
            scores = top_p_filter(scores, spec.top_p, spec.min_tokens_to_keep)
    return scores
