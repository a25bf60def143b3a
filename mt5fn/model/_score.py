"""``score``: the log-probability the model gives each label token, and each sequence.

What reranking, perplexity and influence-style studies reach for first:
``log p(y | x) = sum_t log p(y_t | y_<t, x)`` under teacher forcing (the
decoder reads ``shift_right(labels)``, as ``loss`` does). Positions labelled
-100 are left out (their per-token score is 0), so a batch of candidates of
different lengths is scored at once. Pure: ``grad`` and ``vmap`` work through it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..kernels import IGNORE_INDEX
from ..checks import preflight
from ._config import MT5Config
from ._model import check_pair, lm_logits, run_seq2seq, shift_right


class Scores(NamedTuple):
    """``sequence`` (B,): each row's summed log-probability; ``tokens`` (B, T): per label token, 0 where -100."""

    sequence: Tensor
    tokens: Tensor


def score(params: dict, cfg: MT5Config, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
          *, decoder_attention_mask: Tensor | None = None) -> Scores:
    """Log-probabilities of ``labels`` (B, T) given ``input_ids`` (B, S), in float32 (float64 stays).

    ``sequence[b] == -loss(params, cfg, input_ids[b:b+1], labels[b:b+1], reduction="sum")``.
    """
    check_pair(params, cfg, input_ids, labels, "labels", attention_mask, decoder_attention_mask)
    preflight.check_seq2seq(params, cfg, input_ids, labels, attention_mask, call="score", decoder_name="labels",
                            logits="full")
    hidden = run_seq2seq(params, cfg, input_ids, shift_right(labels, cfg), attention_mask,
                         decoder_attention_mask)  # (B, T, d)
    logits = lm_logits(params, cfg, hidden)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (B, T, V)
    kept = labels != IGNORE_INDEX  # (B, T)
    chosen = logits.gather(-1, torch.where(kept, labels, 0)[..., None])[..., 0]  # (B, T)
    tokens = torch.where(kept, chosen - torch.logsumexp(logits, dim=-1), 0.0)  # (B, T)
    return Scores(sequence=tokens.sum(dim=1), tokens=tokens)
