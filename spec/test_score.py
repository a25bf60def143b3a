"""``mt5fn.score``: log-probabilities of label tokens under teacher forcing.

* ``sequence[b] == -loss(row b alone, reduction="sum")``: each row's score is
  the summed log-likelihood of its kept labels, the negated summed
  cross-entropy transformers' loss computes (rows are independent: padding
  other rows, or batching them, changes nothing).
* ``tokens`` is 0 exactly where the label is -100, ``<= 0`` elsewhere, and
  sums to ``sequence``; ``exp(tokens)`` is the probability ``forward``'s
  softmax gives the label.
"""

from __future__ import annotations

import torch
from hypothesis import given

import mt5fn
from spec.strategies import model_cases

TOL = dict(rtol=1e-9, atol=1e-9)


@given(model_cases())
def test_score_is_minus_the_summed_loss_of_each_row(case):
    cfg, p = case.cfg, case.params
    scores = mt5fn.score(p, cfg, case.input_ids, case.labels, case.attention_mask)
    batch, length = case.labels.shape
    assert scores.sequence.shape == (batch,) and scores.tokens.shape == (batch, length)
    for b in range(batch):
        mask = None if case.attention_mask is None else case.attention_mask[b:b + 1]
        row_loss = mt5fn.loss(p, cfg, case.input_ids[b:b + 1], case.labels[b:b + 1], mask, reduction="sum")
        torch.testing.assert_close(scores.sequence[b], -row_loss, **TOL)


@given(model_cases())
def test_token_scores_are_the_label_log_probabilities(case):
    cfg, p = case.cfg, case.params
    scores = mt5fn.score(p, cfg, case.input_ids, case.labels, case.attention_mask)
    ignored = case.labels == -100
    assert (scores.tokens[ignored] == 0).all() and (scores.tokens[~ignored] <= 0).all()
    torch.testing.assert_close(scores.tokens.sum(1), scores.sequence, **TOL)
    logits = mt5fn.forward(p, cfg, case.input_ids, mt5fn.shift_right(case.labels, cfg), case.attention_mask)
    probs = torch.softmax(logits, -1).gather(-1, case.labels.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(scores.tokens.exp()[~ignored], probs[~ignored], **TOL)
