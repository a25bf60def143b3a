"""Hypothesis strategies for the executable specification (and for any test that wants them).

Everything drawn here is tiny on purpose -- vocab <= 64, d_model <= 32, at
most two layers per stack, sequences of at most 12 tokens -- so that one
example runs in milliseconds and the ``ci`` profile stays fast, while still
covering the axes along which the T5 family varies:

* ``model_type`` t5 / mt5 / umt5 (shared vs per-layer position tables, output scaling),
* ``feed_forward_proj`` relu / gated-gelu / gated-silu,
* tied and untied LM heads,
* ``num_heads * d_kv`` equal to or different from ``d_model``,
* ``num_decoder_layers`` equal to or different from ``num_layers``,
* small ``relative_attention_max_distance`` (saturated inside a 12-token
  sequence) and large ones (never reached).

Batches come with padding masks that keep at least one token per row (a row
with every key masked is degenerate: its softmax is uniform over the padding).
Decoder masks also keep position 0, so that under the causal mask every
decoder query sees at least one kept key.

Usage::

    from spec.strategies import configs, model_cases

    @given(model_cases())
    def test_something(case):
        logits = mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids,
                               case.attention_mask, case.decoder_attention_mask)
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st
from torch import Tensor

import mt5fn

MODEL_TYPES = ("t5", "mt5", "umt5")
FEED_FORWARD_PROJS = ("relu", "gated-gelu", "gated-silu")
MAX_VOCAB = 64
MAX_D_MODEL = 32
MAX_LAYERS = 2
MAX_LENGTH = 12
IGNORE_INDEX = -100


@st.composite
def bucket_settings(draw, *, max_buckets: int = 64) -> tuple[int, int]:
    """``(num_buckets, max_distance)`` for which the bucket function is well defined.

    T5's log-spaced buckets need ``max_distance > max_exact`` in both modes;
    the causal mode has the larger exact region (``num_buckets // 2``), so
    ``max_distance > num_buckets // 2``. (At ``max_distance == max_exact`` the
    reference divides by ``log(1) = 0``; below it the buckets run backwards.)
    Half the draws saturate within a short sequence, half are large.
    """
    num_buckets = draw(st.integers(4, max_buckets))
    floor = num_buckets // 2 + 1
    max_distance = draw(st.one_of(st.integers(floor, floor + 8), st.integers(max(floor, 64), 512)))
    return num_buckets, max_distance


@st.composite
def configs(draw, *, model_types: tuple[str, ...] = MODEL_TYPES,
            feed_forward_projs: tuple[str, ...] = FEED_FORWARD_PROJS,
            max_layers: int = MAX_LAYERS) -> mt5fn.MT5Config:
    """A tiny, valid ``MT5Config`` spread over the family's variants (see the module docstring)."""
    model_type = draw(st.sampled_from(model_types))
    num_heads = draw(st.integers(1, 4))
    d_kv = draw(st.integers(1, MAX_D_MODEL // num_heads))
    # Half the time the attention width equals d_model (the common case), else anything.
    d_model = draw(st.one_of(st.just(num_heads * d_kv), st.integers(4, MAX_D_MODEL)))
    num_buckets, max_distance = draw(bucket_settings(max_buckets=32))
    num_layers = draw(st.integers(1, max_layers))
    num_decoder_layers = draw(st.integers(1, max_layers))
    return mt5fn.MT5Config(
        vocab_size=draw(st.integers(8, MAX_VOCAB)),
        d_model=d_model,
        d_kv=d_kv,
        d_ff=draw(st.integers(2, 2 * MAX_D_MODEL)),
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        feed_forward_proj=draw(st.sampled_from(feed_forward_projs)),
        tie_word_embeddings=draw(st.booleans()),
        model_type=model_type,
    )


@st.composite
def token_ids(draw, vocab_size: int, batch: int, length: int) -> Tensor:
    """A (batch, length) int64 tensor of ids in ``[0, vocab_size)``."""
    rows = draw(st.lists(st.lists(st.integers(0, vocab_size - 1), min_size=length, max_size=length),
                         min_size=batch, max_size=batch))
    return torch.tensor(rows, dtype=torch.long)  # (B, T)


@st.composite
def padding_masks(draw, batch: int, length: int, *, keep_first: bool = False) -> Tensor:
    """A (batch, length) int64 keep-mask (1 kept, 0 padding) with a kept token in every row.

    Each row is either right-padded (the usual layout) or an arbitrary pattern
    with holes; ``keep_first`` forces position 0 to be kept.
    """
    rows = []
    for _ in range(batch):
        if draw(st.booleans()):
            kept = draw(st.integers(1, length))
            row = [1] * kept + [0] * (length - kept)
        else:
            row = draw(st.lists(st.integers(0, 1), min_size=length, max_size=length))
            if keep_first:
                row[0] = 1
            elif not any(row):
                row[draw(st.integers(0, length - 1))] = 1
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)  # (B, T)


@st.composite
def label_batches(draw, vocab_size: int, batch: int, length: int) -> Tensor:
    """(batch, length) labels in ``[0, vocab_size)`` with some -100 (ignored), >= 1 kept per row."""
    labels = draw(token_ids(vocab_size, batch, length))  # (B, T)
    ignore = draw(padding_masks(batch, length)) == 0  # the mask keeps >= 1 per row
    return labels.masked_fill(ignore, IGNORE_INDEX)


@dataclasses.dataclass(frozen=True)
class Case:
    """One drawn model and one batch for it."""

    cfg: mt5fn.MT5Config
    params: dict
    input_ids: Tensor  # (B, S)
    attention_mask: Tensor | None  # (B, S)
    decoder_input_ids: Tensor  # (B, T)
    decoder_attention_mask: Tensor | None  # (B, T)
    labels: Tensor  # (B, T), with -100s
    seed: int


@st.composite
def model_cases(draw, *, config_strategy: st.SearchStrategy | None = None, dtype: torch.dtype = torch.float64,
                min_batch: int = 1, max_batch: int = 3, max_length: int = MAX_LENGTH,
                masks: bool = True) -> Case:
    """A config, freshly initialised parameters (``dtype``) and a padded batch.

    Masks are drawn (or ``None``) only when ``masks`` is set; when drawn they
    keep >= 1 token per row, and decoder masks keep position 0.
    """
    cfg = draw(config_strategy if config_strategy is not None else configs())
    seed = draw(st.integers(0, 2 ** 16))
    batch = draw(st.integers(min_batch, max_batch))
    src_len = draw(st.integers(1, max_length))
    tgt_len = draw(st.integers(1, max_length))
    input_ids = draw(token_ids(cfg.vocab_size, batch, src_len))
    decoder_input_ids = draw(token_ids(cfg.vocab_size, batch, tgt_len))
    attention_mask = decoder_attention_mask = None
    if masks:
        if draw(st.booleans()):
            attention_mask = draw(padding_masks(batch, src_len))
        if draw(st.booleans()):
            decoder_attention_mask = draw(padding_masks(batch, tgt_len, keep_first=True))
    labels = draw(label_batches(cfg.vocab_size, batch, tgt_len))
    params = mt5fn.init_params(cfg, seed=seed, dtype=dtype)
    return Case(cfg, params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, labels, seed)


def ones_mask(ids: Tensor) -> Tensor:
    """An all-kept mask for ``ids``: what ``None`` means."""
    return torch.ones_like(ids)
