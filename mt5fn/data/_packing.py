"""Packing a token stream into fixed-length examples (T5's ``reduce_concat_tokens``
followed by ``split_tokens``): documents are concatenated end to end and cut
into chunks of exactly ``length`` tokens; the incomplete tail is dropped.

For span corruption, pack to the raw length that
``compute_input_and_target_lengths`` returns so every corrupted example has
exactly the requested inputs length.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

from ..checks import check_int


def _as_ids(document: Any, index: int) -> Tensor:
    if isinstance(document, Tensor):
        if document.dim() != 1 or document.dtype.is_floating_point or document.dtype == torch.bool:
            raise ValueError(f"token_stream[{index}] must be a 1-D integer tensor, got dtype {document.dtype} "
                             f"shape {tuple(document.shape)}")
        return document.to(torch.long)
    try:
        ids = torch.as_tensor(list(document), dtype=torch.long)
    except (TypeError, ValueError) as error:
        raise ValueError(f"token_stream[{index}] must be a sequence of token ids, "
                         f"got {type(document).__name__}") from error
    if ids.dim() != 1:
        raise ValueError(f"token_stream[{index}] must be 1-D, got shape {tuple(ids.shape)}")
    return ids


def _check_length(length: Any) -> int:
    return check_int("length", length, 1, words="a positive int")


def iter_packed(token_stream: Iterable[Any], length: int) -> Iterator[Tensor]:
    """Lazily yield LongTensor chunks (length,) from an iterable of documents (1-D id sequences).

    Holds at most one chunk plus one document in memory, so it streams a
    corpus of any size.
    """
    length = _check_length(length)
    if isinstance(token_stream, Tensor):  # one flat stream of ids
        token_stream = [token_stream]
    pending: list[Tensor] = []
    pending_len = 0
    for index, document in enumerate(token_stream):
        ids = _as_ids(document, index)
        pending.append(ids)
        pending_len += len(ids)
        if pending_len < length:
            continue
        flat = torch.cat(pending)  # (pending_len,)
        usable = (pending_len // length) * length
        yield from flat[:usable].view(-1, length)  # each (length,)
        rest = flat[usable:]
        pending, pending_len = [rest], len(rest)


def pack(token_stream: Iterable[Any], length: int) -> Tensor:
    """Concatenate documents and chop them into a LongTensor (N, length); the remainder is dropped.

    ``token_stream`` is an iterable of 1-D token-id sequences (tensors or
    lists), or a single 1-D tensor. No separator is inserted (as T5 packs
    pretraining text); append EOS to each document first if you want one.
    """
    length = _check_length(length)
    chunks = list(iter_packed(token_stream, length))
    if not chunks:
        return torch.empty(0, length, dtype=torch.long)
    return torch.stack(chunks)  # (N, length)


def pack_pairs(pairs: Iterable[tuple[Any, Any]], max_input_length: int, max_target_length: int
               ) -> list[tuple[Tensor, Tensor]]:
    """Supervised packing: consecutive ``(inputs, targets)`` pairs joined end to end, greedily and in
    order, while both joined sides fit (``max_input_length`` / ``max_target_length``).

    Each pair is kept whole (``pack`` would cut examples at fixed lengths), each side keeps its own
    EOS, so a packed row reads ``in_1 </s> in_2 </s> ...`` -> ``out_1 </s> out_2 </s> ...``. There
    are no segment ids: the examples of one row attend to each other (as packing without segment
    masks does); what packing buys is fewer pad tokens per batch.
    """
    max_input_length, max_target_length = _check_length(max_input_length), _check_length(max_target_length)
    rows: list[tuple[Tensor, Tensor]] = []
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    for index, pair in enumerate(pairs):
        source, target = _as_ids(pair[0], index), _as_ids(pair[1], index)
        if len(source) > max_input_length or len(target) > max_target_length:
            raise ValueError(f"pairs[{index}] is longer than the packed row ({len(source)} > {max_input_length} "
                             f"or {len(target)} > {max_target_length}); truncate the pairs first")
        fits = (sum(map(len, inputs)) + len(source) <= max_input_length
                and sum(map(len, targets)) + len(target) <= max_target_length)
        if inputs and not fits:
            rows.append((torch.cat(inputs), torch.cat(targets)))
            inputs, targets = [], []
        inputs.append(source)
        targets.append(target)
    if inputs:
        rows.append((torch.cat(inputs), torch.cat(targets)))
    return rows
