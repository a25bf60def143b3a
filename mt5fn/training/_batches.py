"""The batches of each step, from examples held in memory or from a stream.

Both give a rank its ``grad_accum`` micro-batches of the *global* batch of a
step, and a data position to store in the checkpoint:

* ``MemoryBatches``: ``BatchPlan`` over indexable ``Examples`` (a fresh
  permutation per epoch); the position is a function of the step alone.
* ``StreamBatches``: the next ``batch_size`` examples of an ``ExampleStream``
  (every rank reads the same stream and keeps its share); the position is
  the stream's state after the step, restored on resume.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import (BatchPlan, DataError, ExampleStream, Examples, check_geometry, collate, make_batch,
                    split_global_batch)


class MemoryBatches:
    def __init__(self, examples: Examples, batch_size: int, grad_accum: int, world_size: int, seed: int,
                 pad_id: int) -> None:
        self.examples, self.pad_id, self.seed = examples, pad_id, seed
        self.plan = BatchPlan(len(examples), batch_size, grad_accum, world_size, seed)
        self.world_size = world_size

    def describe(self) -> str:
        return f"{len(self.examples)} examples; {self.plan.batches_per_epoch} steps per epoch"

    @property
    def micro_batch_size(self) -> int:
        return self.plan.micro_batch_size

    def local(self, step: int, rank: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
        epoch = self.plan.position(step)["epoch"]
        return [{key: value.to(device) for key, value in make_batch(self.examples, indices, epoch,
                                                                   self.pad_id).items()}
                for indices in self.plan.local_micro_batches(step, rank)]

    def state(self, step: int) -> dict[str, Any]:
        return {**self.plan.position(step), "num_examples": self.plan.num_examples, "seed": self.seed,
                "world_size": self.world_size}

    def restore(self, state: dict[str, Any], step: int) -> None:
        """Nothing to restore (the order is a function of the step); the examples must be the checkpoint's."""
        if int(state["num_examples"]) != len(self.examples):
            raise DataError(f"--resume: the checkpoint's run had {state['num_examples']} training examples, this "
                            f"one has {len(self.examples)}; the data or its tokenization changed")


class StreamBatches:
    def __init__(self, stream: ExampleStream, batch_size: int, grad_accum: int, world_size: int, pad_id: int
                 ) -> None:
        check_geometry(batch_size, grad_accum, world_size)
        self.stream, self.batch_size, self.grad_accum = stream, batch_size, grad_accum
        self.world_size, self.pad_id = world_size, pad_id

    def describe(self) -> str:
        return f"streaming {len(self.stream.files)} file(s)"

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    def local(self, step: int, rank: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
        examples = self.stream.take(self.batch_size)
        return [{key: value.to(device) for key, value in collate(part, pad_id=self.pad_id).items()}
                for part in split_global_batch(examples, self.grad_accum, self.world_size, rank)]

    def state(self, step: int) -> dict[str, Any]:
        return {"examples_seen": self.stream.examples_seen, "stream": self.stream.state(),
                "world_size": self.world_size}

    def restore(self, state: dict[str, Any], step: int) -> None:
        self.stream.restore(state["stream"])
