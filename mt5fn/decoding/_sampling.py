"""Greedy decoding and ancestral sampling, one token per row per step.

Each step takes the processed scores of the next token (``_logits_processors``)
and picks the arg-max (greedy) or draws from their softmax with the caller's
``torch.Generator`` (sampling: one ``multinomial`` call over all rows per step,
as transformers does, so the same seed draws the same tokens). A row that
emitted EOS is finished: it receives ``pad_token_id`` from then on, and the
loop stops when every row is finished or ``max_new_tokens`` were generated.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..model._config import MT5Config
from ._logits_processors import Processing, process

Step = Callable[[Tensor, int], Tensor]  # (tokens (N,), step index) -> next-token logits (N, V)


def sample_loop(step: Step, cfg: MT5Config, spec: Processing, rows: int, max_new_tokens: int,
                generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Decode ``rows`` sequences; returns (rows, 1 + generated) ids, start token first."""
    pad, eos = cfg.pad_token_id, cfg.eos_token_id
    sequences = torch.full((rows, 1 + max_new_tokens), pad, dtype=torch.long, device=device)
    sequences[:, 0] = cfg.decoder_start_token_id
    running = torch.ones(rows, dtype=torch.bool, device=device)
    width = 1 + max_new_tokens
    for t in range(max_new_tokens):
        logits = step(sequences[:, t], t).float()  # (N, V)
        scores = process(spec, sequences[:, :t + 1], logits, t)
        if spec.do_sample:
            probs = torch.softmax(scores, dim=-1)  # (N, V)
            chosen = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)  # (N,)
        else:
            chosen = torch.argmax(scores, dim=-1)  # (N,)
        chosen = torch.where(running, chosen, pad)
        sequences[:, t + 1] = chosen
        running &= chosen != eos
        if not bool(running.any()):
            width = t + 2
            break
    return sequences[:, :width]
