"""Beam search with length penalty, as transformers' ``generate`` runs it.

Beam search keeps the ``K = num_beams`` best partial sequences by summed
log-probability (Graves 2012; Sutskever et al. 2014; Wu et al. 2016 for the
length penalty). Per step, per input:

1. every running beam's next-token log-probabilities (after the score
   processors) are added to its score, and the best ``2K`` of the ``K x V``
   continuations are taken (sampled without replacement with
   ``do_sample``) -- twice K so that K non-finished ones remain even if the
   best K all end here;
2. a continuation *finishes* when it emits EOS or reaches ``max_new_tokens``;
   the best K unfinished continue as the running beams;
3. finished continuations among the best K candidates compete for the K
   slots of the finished set with score ``sum_logprob / length **
   length_penalty``, ``length`` counting the generated tokens, EOS included;
4. an input is done when its K finished slots are full and no running beam
   can still beat the worst of them: with ``early_stopping=True`` as soon as
   the slots are full; with ``False`` judging the best running beam at its
   current length; with ``"never"`` at ``max_new_tokens`` when
   ``length_penalty > 0`` (a longer beam could still score higher).

The arithmetic (the -1e9 sentinels, the order of the tensor operations, the
tie-breaking of ``topk``) follows transformers 5 so the chosen ids agree.
Finished rows are padded with ``pad_token_id`` after EOS (transformers fills
them with EOS there because its pad id 0 reads as "no pad").

Every beam starts from the decoder prefix (the start token, or a forced
prefix beginning with it); lengths in the penalty count generated tokens
only, as transformers counts them. With ``output_scores`` the loop also
carries each hypothesis' per-token processed log-probabilities (what
transformers' ``compute_transition_scores(sequences, scores, beam_indices)``
recovers) and returns the final beam scores (its ``sequences_scores``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..model._config import MT5Config
from ._logits_processors import Processing, process
from ._sampling import Step

Reorder = Callable[[Tensor], None]  # (source row of each new row (N,)) -> None

_NEG = -1.0e9  # the "impossible" score transformers uses, kept for identical tie-breaking


class BeamResult(NamedTuple):
    sequences: Tensor  # (B * R, P + generated)
    scores: Tensor | None  # (B * R, generated): each chosen token's processed log-probability, 0 after EOS
    sequences_scores: Tensor | None  # (B * R,): sum of scores / generated length ** length_penalty


def _take(tensor: Tensor, index: Tensor) -> Tensor:
    """Gather along the beam axis: tensor (B, C, ...), index (B, K) -> (B, K, ...)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def beam_loop(step: Step, reorder: Reorder, cfg: MT5Config, spec: Processing, prefix: Tensor, num_beams: int,
              max_new_tokens: int, length_penalty: float, early_stopping: bool | str,
              num_return_sequences: int, generator: torch.Generator | None,
              output_scores: bool = False) -> BeamResult:
    """Beam search from ``prefix`` (B, P); the best ``num_return_sequences`` hypotheses per input, best first.

    ``step`` runs the B * num_beams rows (each input's beams adjacent); ``reorder`` moves the
    decoder state to the rows the surviving beams come from.
    """
    B, P = prefix.shape
    K, C, V = num_beams, 2 * num_beams, cfg.vocab_size
    device = prefix.device
    width = P + max_new_tokens
    pad = cfg.pad_token_id
    eos = torch.tensor(cfg.eos_token_ids, device=device)  # any of them finishes a hypothesis

    running = torch.full((B, K, width), pad, dtype=torch.long, device=device)
    running[:, :, :P] = prefix[:, None, :]
    running_scores = torch.zeros((B, K), device=device)
    running_scores[:, 1:] = _NEG  # only beam 0 is real at first: no duplicate continuations
    done = running.clone()  # the finished set: K slots per input
    done_scores = torch.full((B, K), _NEG, device=device)
    done_full = torch.zeros((B, K), dtype=torch.bool, device=device)  # slot holds a real hypothesis
    done_length = torch.zeros((B, K), dtype=torch.long, device=device)
    # per-token scores of each hypothesis, carried like its ids (only with output_scores)
    running_tokens = torch.zeros((B, K, max_new_tokens), device=device) if output_scores else None
    done_tokens = running_tokens.clone() if output_scores else None
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    top_k_slot = torch.arange(C, device=device) < K  # only the best K candidates may finish
    row_offset = torch.arange(B, device=device)[:, None] * K  # (B, 1)

    for t in range(max_new_tokens):
        length = P + t  # ids in each running beam so far, prefix included
        fed = running[:, :, :P] if t == 0 else running[:, :, length - 1:length]  # (B, K, T)
        logits = step(fed.reshape(B * K, -1)).float()  # (B*K, V)
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = process(spec, running[:, :, :length].reshape(B * K, length), log_probs, t)
        totals = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        if spec.do_sample:
            picks = torch.multinomial(torch.softmax(totals, dim=-1), num_samples=C, generator=generator)  # (B, C)
            cand_scores = torch.gather(totals, 1, picks)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            picks = picks.gather(-1, order)
        else:
            cand_scores, picks = torch.topk(totals, k=C)  # (B, C)
        origin, tokens = picks // V, picks % V  # source beam and new token of each candidate
        candidates = _take(running, origin)  # (B, C, width)
        candidates[:, :, length] = tokens
        finishes = torch.isin(tokens, eos) | (length + 1 >= width)  # (B, C)
        if output_scores:
            cand_tokens = _take(running_tokens, origin)  # (B, C, max_new)
            cand_tokens[:, :, t] = torch.gather(log_probs.view(B, K * V), 1, picks)

        # Running beams for the next step: the best K candidates that did not finish.
        alive = cand_scores + finishes.to(torch.float32) * _NEG
        keep = torch.topk(alive, k=K)[1]  # (B, K)
        running = _take(candidates, keep)
        running_scores = _take(alive, keep)
        source_rows = (_take(origin, keep) + row_offset).view(B * K)

        # Finished set: merge the newly finished among the best K candidates, keep the best K.
        just_finished = finishes & top_k_slot  # (B, C)
        final = cand_scores / ((t + 1) ** length_penalty)
        final += (done_full.all(dim=-1, keepdim=True) & (early_stopping is True)).to(torch.float32) * _NEG
        final += (~improvable).to(torch.float32) * _NEG
        final += (~just_finished) * _NEG
        merged_scores = torch.cat((done_scores, final), dim=1)  # (B, K + C)
        best = torch.topk(merged_scores, k=K)[1]
        done = _take(torch.cat((done, candidates), dim=1), best)
        done_scores = _take(merged_scores, best)
        done_full = _take(torch.cat((done_full, just_finished), dim=1), best)
        done_length = _take(torch.cat((done_length, torch.full_like(cand_scores, t + 1, dtype=torch.long)), 1), best)
        if output_scores:
            running_tokens = _take(cand_tokens, keep)
            done_tokens = _take(torch.cat((done_tokens, cand_tokens), dim=1), best)

        # Can a running beam still enter the finished set?
        if early_stopping == "never" and length_penalty > 0.0:
            hoped_length = max_new_tokens
        else:
            hoped_length = t + 1
        best_running = running_scores[:, :1] / (hoped_length ** length_penalty)  # (B, 1)
        worst_done = torch.where(done_full, torch.min(done_scores, dim=1, keepdim=True)[0], _NEG)  # (B, K)
        improvable = improvable & torch.any(best_running > worst_done, dim=-1, keepdim=True)
        all_full = bool(done_full.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or bool(finishes.all()):
            break
        reorder(source_rows)

    R = num_return_sequences
    longest = int(done_length[:, :R].max())
    sequences = done[:, :R].reshape(B * R, width)[:, :P + longest]
    if not output_scores:
        return BeamResult(sequences, None, None)
    return BeamResult(sequences, done_tokens[:, :R].reshape(B * R, max_new_tokens)[:, :longest],
                      done_scores[:, :R].reshape(B * R))
