"""Invariances of the whole encoder-decoder (Raffel et al. 2020, sec. 2.1; Vaswani et al. 2017).

* Padding invariance: a key whose mask is 0 gets ``finfo.min`` added to its
  score, so its softmax weight is exactly 0. Appending masked tokens to the
  encoder input therefore changes no encoder output at the original
  positions and no decoder logit; appending masked tokens to the decoder
  input changes no logit at the original positions.
* Batch independence: every operation is per row (the padding mask is
  (B, 1, 1, S)), so a row's output does not depend on its batch mates.
* Decoder causality: the decoder's self-attention mask keeps key j for query
  t only when j <= t, so the logits at t ignore decoder tokens after t.

Parameters are float64 so that the only differences are summation-order
round-off (tolerance 1e-9 absolute on logits of magnitude <= ~100).
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import mt5fn
from spec.strategies import model_cases, ones_mask, token_ids

TOL = dict(rtol=1e-9, atol=1e-9)


def _pad(ids: torch.Tensor, mask: torch.Tensor | None, extra_ids: torch.Tensor):
    """Append ``extra_ids`` (B, E) as masked positions: (B, T + E) ids and mask."""
    mask = ones_mask(ids) if mask is None else mask
    return torch.cat([ids, extra_ids], dim=1), torch.cat([mask, torch.zeros_like(extra_ids)], dim=1)


@given(model_cases(), st.data())
def test_masked_encoder_padding_changes_nothing(case, data):
    """Appending E masked tokens (any ids) to the encoder input leaves the encoder output
    at the original S positions and every decoder logit unchanged."""
    batch = case.input_ids.shape[0]
    extra = data.draw(token_ids(case.cfg.vocab_size, batch, data.draw(st.integers(1, 6))), label="extra")
    padded_ids, padded_mask = _pad(case.input_ids, case.attention_mask, extra)
    length = case.input_ids.shape[1]

    hidden = mt5fn.encode(case.params, case.cfg, case.input_ids, case.attention_mask)  # (B, S, d)
    padded_hidden = mt5fn.encode(case.params, case.cfg, padded_ids, padded_mask)  # (B, S + E, d)
    torch.testing.assert_close(padded_hidden[:, :length], hidden, **TOL)

    logits = mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids,
                           case.attention_mask, case.decoder_attention_mask)  # (B, T, V)
    padded_logits = mt5fn.forward(case.params, case.cfg, padded_ids, case.decoder_input_ids,
                                  padded_mask, case.decoder_attention_mask)
    torch.testing.assert_close(padded_logits, logits, **TOL)


@given(model_cases(), st.data())
def test_masked_decoder_padding_changes_no_earlier_logit(case, data):
    """Appending E masked tokens to the decoder input leaves the logits at the original
    T positions unchanged (they are neither attended to, nor, by causality, visible)."""
    batch = case.input_ids.shape[0]
    extra = data.draw(token_ids(case.cfg.vocab_size, batch, data.draw(st.integers(1, 6))), label="extra")
    padded_ids, padded_mask = _pad(case.decoder_input_ids, case.decoder_attention_mask, extra)
    length = case.decoder_input_ids.shape[1]
    logits = mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids,
                           case.attention_mask, case.decoder_attention_mask)  # (B, T, V)
    padded_logits = mt5fn.forward(case.params, case.cfg, case.input_ids, padded_ids,
                                  case.attention_mask, padded_mask)  # (B, T + E, V)
    torch.testing.assert_close(padded_logits[:, :length], logits, **TOL)


@given(model_cases(min_batch=2, max_batch=4))
def test_rows_are_independent_of_their_batch_mates(case):
    """``forward(batch)[i] == forward(batch[i:i+1])[0]`` for every row i, for the encoder
    output and the logits alike."""
    def rows(tensor, i):
        return None if tensor is None else tensor[i:i + 1]

    logits = mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids,
                           case.attention_mask, case.decoder_attention_mask)  # (B, T, V)
    hidden = mt5fn.encode(case.params, case.cfg, case.input_ids, case.attention_mask)  # (B, S, d)
    for i in range(case.input_ids.shape[0]):
        alone = mt5fn.forward(case.params, case.cfg, rows(case.input_ids, i), rows(case.decoder_input_ids, i),
                              rows(case.attention_mask, i), rows(case.decoder_attention_mask, i))  # (1, T, V)
        torch.testing.assert_close(alone, logits[i:i + 1], **TOL)
        alone_hidden = mt5fn.encode(case.params, case.cfg, rows(case.input_ids, i), rows(case.attention_mask, i))
        torch.testing.assert_close(alone_hidden, hidden[i:i + 1], **TOL)


@given(model_cases(), st.data())
def test_decoder_is_causal(case, data):
    """Logits at decoder position t are unchanged when the decoder tokens after t change
    (whatever they are changed to)."""
    length = case.decoder_input_ids.shape[1]
    t = data.draw(st.integers(0, length - 1), label="t")
    batch = case.input_ids.shape[0]
    replacement = data.draw(token_ids(case.cfg.vocab_size, batch, length), label="replacement")
    changed = case.decoder_input_ids.clone()
    changed[:, t + 1:] = replacement[:, t + 1:]
    logits = mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids,
                           case.attention_mask, case.decoder_attention_mask)  # (B, T, V)
    changed_logits = mt5fn.forward(case.params, case.cfg, case.input_ids, changed,
                                   case.attention_mask, case.decoder_attention_mask)
    torch.testing.assert_close(changed_logits[:, :t + 1], logits[:, :t + 1], **TOL)
