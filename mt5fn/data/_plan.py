"""Which examples each step, rank and micro-batch of a run reads (examples held in memory).

The order is a pure function of the step: each epoch visits a fresh
permutation of the examples seeded by ``(seed, epoch)``, so resuming needs only
the step, and every rank of a distributed run agrees on the global batch
without communicating.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks import check_int
from ._collate import collate
from ._examples import Examples, mix_seed
from ._readers import DataError


def check_geometry(batch_size: int, grad_accum: int, world_size: int) -> None:
    for name, value in (("--batch-size", batch_size), ("--grad-accum", grad_accum)):
        check_int(name, value, 1, words="a positive int", error=DataError)
    split = grad_accum * world_size
    if batch_size % split:
        raise DataError(f"--batch-size {batch_size} (the global batch) must be divisible by "
                        f"--grad-accum {grad_accum} x {world_size} ranks = {split}")


def split_global_batch(items: list, grad_accum: int, world_size: int, rank: int) -> list[list]:
    """This rank's ``grad_accum`` micro-batches of a global batch: item ``k * world * m + r * m + j``
    goes to micro-batch ``k`` of rank ``r`` (the same split for indices and streamed examples)."""
    micro = len(items) // (grad_accum * world_size)
    return [[items[(k * world_size + rank) * micro + j] for j in range(micro)] for k in range(grad_accum)]


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
        check_geometry(self.batch_size, self.grad_accum, self.world_size)
        if self.world_size > self.num_examples:
            raise DataError(f"{self.world_size} ranks but only {self.num_examples} training examples: "
                            "every rank needs at least one example; use fewer processes or more data")
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
                               generator=torch.Generator().manual_seed(mix_seed(self.seed, where["epoch"], 0x0D))
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
