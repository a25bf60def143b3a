"""Batching (inputs, targets) pairs into the tensors ``mt5fn.loss`` takes.

Right padding to the longest row: ``input_ids`` with ``pad_id`` and an
``attention_mask`` of ones over real tokens; ``labels`` with -100 so padded
positions are ignored by the loss (transformers' convention; the decoder reads
``shift_right(labels)``, which turns -100 back into the pad id).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_int
from ..functional import IGNORE_INDEX


def _as_row(value: Any, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(list(value), dtype=torch.long)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} must be a 1-D sequence of token ids, got {type(value).__name__}") from error
    if value.dim() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
        raise ValueError(f"{where} must be a 1-D integer tensor, got dtype {value.dtype} shape {tuple(value.shape)}")
    if len(value) == 0:
        raise ValueError(f"{where} is empty; every example needs at least one token (EOS)")
    return value.to(torch.long)


def _pad(rows: list[Tensor], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(row) for row in rows)), value, dtype=torch.long)  # (B, T)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def collate(examples: Sequence[tuple[Any, Any]], pad_id: int = 0) -> dict[str, Tensor]:
    """A list of ``(inputs, targets)`` 1-D id tensors -> a batch dict.

    Returns ``{"input_ids": (B, S), "attention_mask": (B, S), "labels": (B, T)}``
    (LongTensors), padded on the right.
    """
    check_int("pad_id", pad_id, 0, words="a non-negative int")
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty; collate needs at least one (inputs, targets) pair")
    inputs, targets = [], []
    for index, example in enumerate(examples):
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise ValueError(f"examples[{index}] must be an (inputs, targets) pair, got {type(example).__name__}")
        inputs.append(_as_row(example[0], f"examples[{index}] inputs"))
        targets.append(_as_row(example[1], f"examples[{index}] targets"))
    input_ids = _pad(inputs, pad_id)  # (B, S)
    attention_mask = _pad([torch.ones_like(row) for row in inputs], 0)  # (B, S)
    labels = _pad(targets, IGNORE_INDEX)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
