"""Held-out evaluation: loss, and with generation exact match, BLEU and chrF.

``evaluate`` computes

* ``eval_loss``: the token-weighted mean cross-entropy over the whole
  evaluation set (``mt5fn.loss(reduction="sum")`` per batch, summed, divided
  by the target tokens), under ``torch.no_grad``;
* with ``generate=True``: greedy (or ``num_beams``) decoding of every input
  with ``mt5fn.generate``, decoded without special tokens, compared with the
  reference targets: ``eval_exact_match`` (percent of outputs equal to their
  reference after stripping whitespace), ``eval_bleu`` and ``eval_chrf``
  (``sacrebleu.corpus_bleu`` / ``corpus_chrf``, 0-100, sacrebleu's defaults).

Names follow transformers' Trainer (``eval_`` + metric). Batches are formed
over inputs sorted by length, so little compute goes to padding; the metrics
do not depend on that order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..functional import IGNORE_INDEX
from ..model import loss as model_loss
from ..data import DataError, DataSummary, Fields, build_examples, collate, read_records
from ..decoding import generate

INSTALL_EVAL = "pip install 'mt5fn[eval]'"


def require_sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise DataError(f"--eval-generate computes BLEU and chrF with sacrebleu, which is not installed: "
                        f"{INSTALL_EVAL}") from None
    return sacrebleu


@dataclass
class EvalSet:
    """Tokenized evaluation examples and, for supervised data, the reference texts."""

    pairs: list[tuple[Tensor, Tensor]]
    references: list[str] | None
    summary: DataSummary

    def __len__(self) -> int:
        return len(self.pairs)


def build_eval_set(paths: tuple[str, ...], fields: Fields, tokenizer, *, max_input_length: int,
                   max_target_length: int, prefix: str = "", seed: int = 0, strict: bool = False,
                   flag: str = "--eval-data") -> tuple[EvalSet, Any]:
    """The evaluation set of ``paths`` (read whole); span mode corrupts each chunk once, seeded by ``seed``.
    Returns ``(eval_set, records)`` so the caller can report what was skipped."""
    records = read_records(paths, fields, strict=strict, flag=flag, split=("validation", "test", "train"))
    examples = build_examples(records.items, tokenizer, fields.mode, max_input_length=max_input_length,
                              max_target_length=max_target_length, seed=seed, prefix=prefix)
    pairs = [examples.get(index, 0) for index in range(len(examples))]
    references = [target for _, target in records.items] if fields.mode == "supervised" else None
    return EvalSet(pairs, references, examples.summary), records


def _batches(pairs: list[tuple[Tensor, Tensor]], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), i))
    return [order[start: start + batch_size] for start in range(0, len(order), batch_size)]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def eval_loss(params: dict, cfg, eval_set: EvalSet, *, batch_size: int, device: torch.device,
              autocast_dtype: torch.dtype | None = None) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for indices in _batches(eval_set.pairs, batch_size):
            batch = {k: v.to(device) for k, v in collate([eval_set.pairs[i] for i in indices],
                                                          pad_id=cfg.pad_token_id).items()}
            with _autocast(device, autocast_dtype):
                summed = model_loss(params, cfg, batch["input_ids"], batch["labels"], batch["attention_mask"],
                                    reduction="sum")
            total += float(summed.double())
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
    return total / max(tokens, 1)


def generations(params: dict, cfg, tokenizer, eval_set: EvalSet, *, batch_size: int, num_beams: int,
                max_new_tokens: int, device: torch.device, autocast_dtype: torch.dtype | None = None) -> list[str]:
    """Decoded outputs, in the evaluation set's order."""
    outputs: list[str] = [""] * len(eval_set)
    with torch.no_grad():
        for indices in _batches(eval_set.pairs, batch_size):
            batch = collate([eval_set.pairs[i] for i in indices], pad_id=cfg.pad_token_id)
            with _autocast(device, autocast_dtype):
                ids = generate(params, cfg, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               max_new_tokens=max_new_tokens, num_beams=num_beams)  # (B, 1 + n)
            for index, text in zip(indices, tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)):
                outputs[index] = text.strip()
    return outputs


def generation_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    sacrebleu = require_sacrebleu()
    refs = [reference.strip() for reference in references]
    exact = sum(h == r for h, r in zip(hypotheses, refs)) / max(len(refs), 1)
    return {"eval_exact_match": 100.0 * exact,
            "eval_bleu": float(sacrebleu.corpus_bleu(hypotheses, [refs]).score),
            "eval_chrf": float(sacrebleu.corpus_chrf(hypotheses, [refs]).score)}


def evaluate(params: dict, cfg, tokenizer, eval_set: EvalSet, *, generate_outputs: bool = False,
             num_beams: int = 1, max_new_tokens: int = 32, batch_size: int = 32,
             device: torch.device | None = None, autocast_dtype: torch.dtype | None = None
             ) -> tuple[dict[str, float], list[str] | None]:
    """``(metrics, outputs)``: ``eval_loss`` and, when ``generate_outputs``, the generation metrics
    and the decoded outputs (see the module docstring)."""
    device = params["shared"].device if device is None else device
    metrics = {"eval_loss": eval_loss(params, cfg, eval_set, batch_size=batch_size, device=device,
                                      autocast_dtype=autocast_dtype)}
    outputs = None
    if generate_outputs:
        if eval_set.references is None:
            raise DataError("generation metrics need supervised (input, target) evaluation data")
        outputs = generations(params, cfg, tokenizer, eval_set, batch_size=batch_size, num_beams=num_beams,
                              max_new_tokens=max_new_tokens, device=device, autocast_dtype=autocast_dtype)
        metrics.update(generation_metrics(outputs, eval_set.references))
    return metrics, outputs
