"""FSDP2 under torchrun: parameters, gradients and optimizer state sharded over the ranks.

``fully_shard`` (``torch.distributed.fsdp``, the FSDP2 engine) is applied to the
``MT5Module`` facade, whose parameters are the pytree leaves; each rank then
holds one shard (a ``DTensor``) of every weight, of its gradient and of its
AdamW moments. The module reads all its weights through one forward, so it is
one FSDP unit: the full weights are gathered for the forward and backward and
freed after, the gradients are reduce-scattered straight into shards, and
the optimizer only ever touches shards. (Sharding block by block would need
each block to be its own module called through ``forward``.)

Gradients: like DDP, FSDP2 *averages* over ranks, so each rank scales its
summed token loss by ``world_size / global_tokens``; accumulation micro-batches
skip the reduce-scatter (``set_requires_gradient_sync(False)``) until the
last. The global gradient norm is the square root of the all-reduced sum of
the shards' squared norms, and clipping scales the shards in place.

Checkpoints: rank 0 writes the *gathered* weights as a normal Hugging Face
folder (``get_model_state_dict(full_state_dict=True)``), and every rank writes
its optimizer shards into ``optimizer/`` with ``torch.distributed.checkpoint``
(``get_optimizer_state_dict``); a resumed run rebuilds the shards from the full
weights and loads its optimizer shards back (``set_optimizer_state_dict``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from ..functional import IGNORE_INDEX
from ..model import MT5Config, MT5Module, unflatten_params
from . import _distributed as D
from ._step import StepResult


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class FSDPEngine:
    """``fully_shard`` over an ``MT5Module`` (see the module docstring)."""

    def __init__(self, params: dict, cfg: MT5Config, ctx: D.Dist, *, dropout: float, max_grad_norm: float | None,
                 autocast: torch.dtype | None, checkpoint_blocks: bool) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.cfg, self.ctx = cfg, ctx
        self.dropout, self.max_grad_norm, self.autocast = dropout, max_grad_norm, autocast
        self.checkpoint_blocks = checkpoint_blocks
        self.module = MT5Module(cfg, params)
        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        fully_shard(self.module, mesh=mesh)
        self.trained = dict(self.module.named_parameters())  # dotted paths -> sharded DTensor parameters
        self.optimizer: torch.optim.Optimizer | None = None

    def compute(self, batches: list[dict], generator: torch.Generator) -> StepResult:
        ctx = self.ctx
        local_tokens = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)
        global_tokens = int(D.all_sum(ctx, local_tokens))
        if global_tokens == 0:
            raise ValueError("the global batch holds no target tokens; nothing to learn from")
        scale = ctx.world_size / global_tokens
        local_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for index, batch in enumerate(batches):
            self.module.set_requires_gradient_sync(index == len(batches) - 1)  # reduce-scatter once, at the end
            autocast = (torch.autocast(device_type=ctx.device.type, dtype=self.autocast) if self.autocast
                        else contextlib.nullcontext())
            with autocast:
                summed = self.module(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                     decoder_attention_mask=batch.get("decoder_attention_mask"),
                                     labels=batch["labels"], reduction="sum", dropout_rate=self.dropout,
                                     generator=generator, checkpoint_blocks=self.checkpoint_blocks)
            (summed * scale).backward()
            local_loss += summed.detach().double()
        loss = torch.tensor(D.all_sum(ctx, local_loss.item()) / global_tokens, dtype=torch.float32)
        grads = {path: p.grad for path, p in self.trained.items() if p.grad is not None}
        squares = sum(float(_local(g).detach().double().pow(2).sum()) for g in grads.values())
        norm = math.sqrt(D.all_sum(ctx, squares))
        if self.max_grad_norm is not None:
            clip = min(self.max_grad_norm / (norm + 1e-6), 1.0)
            if clip < 1.0:
                for g in grads.values():
                    _local(g).mul_(clip)
        return StepResult(loss=loss, grads=grads, num_tokens=global_tokens,
                          grad_norm=torch.tensor(norm, dtype=torch.float32))

    def apply(self, result: StepResult) -> None:
        assert self.optimizer is not None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def weight_norm(self) -> float:
        squares = sum(float(_local(p).detach().double().pow(2).sum()) for p in self.trained.values())
        return math.sqrt(D.all_sum(self.ctx, squares))

    def model_params(self) -> dict:
        """The gathered full weights on rank 0 (CPU; an empty dict elsewhere). Collective: every rank calls it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return unflatten_params(dict(state)) if state else {}

    effective_params = model_params

    # -------------------------------------------------------------- sharded optimizer state
    def save_optimizer(self, directory: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        assert self.optimizer is not None
        dcp.save({"optimizer": get_optimizer_state_dict(self.module, self.optimizer)}, checkpoint_id=directory)

    def load_optimizer(self, directory: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        assert self.optimizer is not None
        # get_optimizer_state_dict first initialises the state (a zero-gradient step at lr 0) so the
        # template has every moment buffer for dcp.load to fill
        template = {"optimizer": get_optimizer_state_dict(self.module, self.optimizer)}
        dcp.load(template, checkpoint_id=directory)
        set_optimizer_state_dict(self.module, self.optimizer, template["optimizer"])
        dist.barrier()
