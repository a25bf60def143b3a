"""Training examples from text files, and the order in which a run visits them.

Two formats, one example per line (blank lines are skipped):

* ``span``: raw text for T5's span-corruption objective (Raffel et al. 2020,
  section 3.1.4). Lines are tokenized without EOS, concatenated and cut into
  chunks of the raw length that ``compute_input_and_target_lengths`` gives for
  ``max_input_length`` (T5's ``reduce_concat_tokens`` + ``split_tokens``);
  each chunk is corrupted afresh every epoch.
* ``supervised``: ``input<TAB>target`` pairs for fine-tuning; each side gets
  EOS and is truncated to its maximum length (keeping EOS last).

Everything random is derived from ``(seed, epoch, index)`` rather than drawn
from a running generator, so the example seen at any step is a pure function
of the step number: resuming needs only the step, and every rank of a
distributed run agrees on the global batch without communicating.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..data import collate, compute_input_and_target_lengths, pack, span_corruption


class DataError(ValueError):
    """Bad training data or batch geometry, with a message naming the file / option."""


def read_examples(paths: Sequence[str], mode: str) -> list[str] | list[tuple[str, str]]:
    """The non-blank lines of ``paths`` (``span``) or their ``(input, target)`` pairs (``supervised``)."""
    if mode not in ("span", "supervised"):
        raise DataError(f"--mode must be 'span' or 'supervised', got {mode!r}")
    if not paths:
        raise DataError("--data: give at least one text file")
    out: list = []
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"--data: no such file {path!r}")
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"--data: {path!r} is not UTF-8 text ({error})") from None
        kept = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            kept += 1
            if mode == "span":
                out.append(line)
                continue
            source, tab, target = line.partition("\t")
            if not tab or not target.strip() or not source.strip():
                what = "no TAB separating input and target" if not tab else \
                    ("an empty target" if not target.strip() else "an empty input")
                raise DataError(f"--data: {path}:{number} has {what}; supervised mode needs "
                                f"'input<TAB>target' on every line, got {line[:80]!r}")
            out.append((source, target))
        if kept == 0:
            raise DataError(f"--data: {path!r} is empty (no non-blank lines)")
    return out


def data_fingerprint(paths: Sequence[str]) -> str:
    """SHA-256 over the data files' bytes, so a resume can refuse changed data."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _truncate(ids: list[int], length: int, eos_id: int) -> Tensor:
    """Ids ending in EOS, at most ``length`` long (EOS kept when cutting)."""
    if not ids or ids[-1] != eos_id:
        ids = list(ids) + [eos_id]
    if len(ids) > length:
        ids = list(ids[: length - 1]) + [eos_id]
    return torch.tensor(ids, dtype=torch.long)


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class Examples:
    """Indexable training examples; ``get(index, epoch)`` -> ``(inputs, targets)`` 1-D LongTensors."""

    mode: str
    items: list  # span: LongTensor chunks (raw length,); supervised: (inputs, targets) tensors
    vocab_size: int
    eos_id: int
    seed: int
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int, epoch: int) -> tuple[Tensor, Tensor]:
        if self.mode == "supervised":
            return self.items[index]
        generator = torch.Generator().manual_seed(_mix(self.seed, epoch, index, 0x5CA1))
        return span_corruption(self.items[index], vocab_size=self.vocab_size, eos_id=self.eos_id,
                               noise_density=self.noise_density,
                               mean_noise_span_length=self.mean_noise_span_length, generator=generator)


def build_examples(raw: list, tokenizer, mode: str, *, max_input_length: int, max_target_length: int,
                   seed: int, vocab_size: int | None = None) -> Examples:
    """Tokenize ``raw`` (from ``read_examples``) into ``Examples``.

    ``vocab_size`` is the tokenizer size including the extra ids (the span
    sentinels are its top ids); it defaults to ``tokenizer.vocab_size``.
    """
    for name, value, least in (("--max-input-length", max_input_length, 2),
                               ("--max-target-length", max_target_length, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DataError(f"{name} must be an int >= {least} (room for a token and EOS), got {value!r}")
    vocab_size = int(tokenizer.vocab_size if vocab_size is None else vocab_size)
    eos_id = int(tokenizer.eos_token_id)
    if mode == "supervised":
        sources = _encode(tokenizer, [pair[0] for pair in raw])
        targets = _encode(tokenizer, [pair[1] for pair in raw])
        items = [(_truncate(s, max_input_length, eos_id), _truncate(t, max_target_length, eos_id))
                 for s, t in zip(sources, targets)]
        return Examples(mode, items, vocab_size, eos_id, seed)
    try:
        raw_length, target_length = compute_input_and_target_lengths(max_input_length)
    except ValueError as error:
        raise DataError(f"--max-input-length {max_input_length} cannot hold a span-corrupted example: {error}") \
            from None
    if target_length > max_target_length:
        raise DataError(f"--max-input-length {max_input_length} gives span-corruption targets of "
                        f"{target_length} tokens, more than --max-target-length {max_target_length}")
    documents = [torch.tensor(_strip_eos(ids, eos_id), dtype=torch.long)
                 for ids in _encode(tokenizer, list(raw))]
    chunks = pack(documents, raw_length)  # (N, raw_length)
    total = sum(len(doc) for doc in documents)
    if len(chunks) == 0:
        raise DataError(f"--data holds {total} tokens, fewer than one span-corruption example of "
                        f"{raw_length} raw tokens (--max-input-length {max_input_length}); "
                        "give more text or a smaller --max-input-length")
    return Examples(mode, list(chunks), vocab_size, eos_id, seed)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, ``</s>`` appended (unpadded lists)."""
    return tokenizer.batch_encode(texts, padding=False, return_tensors=None)["input_ids"]


def _strip_eos(ids: list[int], eos_id: int) -> list[int]:
    return list(ids[:-1]) if ids and ids[-1] == eos_id else list(ids)


@dataclass(frozen=True)
class BatchPlan:
    """Which examples each rank and micro-batch of each step reads.

    ``batch_size`` is the *global* batch of one optimizer step; it is split
    into ``grad_accum`` micro-batches on each of ``world_size`` ranks, so a run
    computes the same step whatever the number of processes. Each epoch visits
    a fresh permutation of the examples (seeded by ``(seed, epoch)``); the
    last incomplete batch of an epoch is dropped.
    """

    num_examples: int
    batch_size: int
    grad_accum: int
    world_size: int
    seed: int

    def __post_init__(self) -> None:
        for name, value in (("--batch-size", self.batch_size), ("--grad-accum", self.grad_accum)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be a positive int, got {value!r}")
        if self.world_size > self.num_examples:
            raise DataError(f"{self.world_size} ranks but only {self.num_examples} training examples: "
                            "every rank needs at least one example; use fewer processes or more data")
        split = self.grad_accum * self.world_size
        if self.batch_size % split:
            raise DataError(f"--batch-size {self.batch_size} (the global batch) must be divisible by "
                            f"--grad-accum {self.grad_accum} x {self.world_size} ranks = {split}")
        if self.batch_size > self.num_examples:
            raise DataError(f"--batch-size {self.batch_size} is larger than the {self.num_examples} "
                            "training examples; lower it or give more data")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def position(self, step: int) -> dict[str, int]:
        """Data position before 0-based ``step``: epoch, batch within it, examples consumed."""
        return {"epoch": step // self.batches_per_epoch, "batch_in_epoch": step % self.batches_per_epoch,
                "examples_seen": step * self.batch_size}

    def global_batch(self, step: int) -> Tensor:
        """Example indices of 0-based ``step``, LongTensor (batch_size,)."""
        where = self.position(step)
        order = torch.randperm(self.num_examples,
                               generator=torch.Generator().manual_seed(_mix(self.seed, where["epoch"], 0x0D))
                               )  # (N,)
        start = where["batch_in_epoch"] * self.batch_size
        return order[start: start + self.batch_size]

    def local_micro_batches(self, step: int, rank: int) -> list[Tensor]:
        """``grad_accum`` index tensors (micro_batch_size,) for ``rank`` at ``step``."""
        indices = self.global_batch(step).view(self.grad_accum, self.world_size, self.micro_batch_size)
        return [indices[k, rank] for k in range(self.grad_accum)]


def make_batch(examples: Examples, indices: Tensor, epoch: int, pad_id: int) -> dict[str, Tensor]:
    """Collate the examples at ``indices`` into input_ids / attention_mask / labels."""
    return collate([examples.get(int(i), epoch) for i in indices], pad_id=pad_id)
