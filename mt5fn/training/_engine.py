"""How one step's gradients are computed and applied: one process, DDP, or LoRA adapters.

An engine owns the tensors the optimizer updates (``trained``: the full
parameter pytree, or the adapter pytree for LoRA) and offers the same four
operations to the loop, whatever the parallelism:

* ``compute(batches, generator)`` -> ``StepResult`` for the *global* batch
  (the local micro-batches of this rank, reduced over ranks);
* ``apply(result)``: the optimizer update, in place;
* ``weight_norm()``: the global norm of the trained weights (the safety check);
* ``model_params()``: the full model as rank 0 saves and evaluates it.

FSDP2 lives in ``_fsdp`` with the same interface.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..model import MT5Config, MT5Module, flatten_params, iter_leaves, tree_map
from . import _distributed as D
from ._optim import apply_gradients
from ._safety import tree_norm
from ._step import StepResult, clip_by_global_norm, global_norm, train_step


class LocalEngine:
    """The pure ``train_step`` on this process; under torchrun (LoRA) the adapter gradients are
    all-reduced by hand, token-weighted, before clipping (adapters are small)."""

    def __init__(self, params: dict, cfg: MT5Config, ctx: D.Dist, *, adapters: dict | None, dropout: float,
                 max_grad_norm: float | None, autocast: torch.dtype | None, checkpoint_blocks: bool) -> None:
        self.params, self.cfg, self.ctx, self.adapters = params, cfg, ctx, adapters
        self.trained = adapters if adapters is not None else params
        self.dropout, self.max_grad_norm, self.autocast = dropout, max_grad_norm, autocast
        self.checkpoint_blocks = checkpoint_blocks
        self.optimizer: torch.optim.Optimizer | None = None

    def compute(self, batches: list[dict], generator: torch.Generator) -> StepResult:
        reduce = self.ctx.enabled
        out = train_step(self.params, self.cfg, batches, dropout_rate=self.dropout, generator=generator,
                         max_grad_norm=None if reduce else self.max_grad_norm, autocast_dtype=self.autocast,
                         checkpoint_blocks=self.checkpoint_blocks, trainable=self.adapters)
        if not reduce:
            return out
        # each rank's gradient is of its local mean loss: weight by its share of the global tokens
        tokens = int(D.all_sum(self.ctx, out.num_tokens))
        share = out.num_tokens / tokens
        grads = tree_map(lambda g: g * share, out.grads)
        for leaf in iter_leaves(grads):
            dist.all_reduce(leaf)
        loss = torch.tensor(D.all_sum(self.ctx, float(out.loss) * out.num_tokens) / tokens, dtype=torch.float32)
        norm = global_norm(grads)
        if self.max_grad_norm is not None:
            grads = clip_by_global_norm(grads, self.max_grad_norm, norm)
        return StepResult(loss, grads, tokens, norm)

    def apply(self, result: StepResult) -> None:
        assert self.optimizer is not None
        apply_gradients(self.optimizer, self.trained, result.grads)

    def trained_leaves(self) -> list[torch.Tensor]:
        """The leaves the optimizer updates (an adapter's A / B factors, not its alpha / dropout)."""
        if self.adapters is None:
            return list(iter_leaves(self.trained))
        from ..lora import is_trainable

        return [leaf for path, leaf in flatten_params(self.trained).items() if is_trainable(path)]

    def weight_norm(self) -> float:
        return tree_norm(self.trained_leaves())

    def model_params(self) -> dict:
        return self.params

    def effective_params(self) -> dict:
        """The weights the model computes with (base + adapters for LoRA), for evaluation."""
        if self.adapters is None:
            return self.params
        from ..lora import apply as apply_adapters

        return apply_adapters(self.params, self.adapters, self.cfg)


class DDPEngine(LocalEngine):
    """``DistributedDataParallel`` over an ``MT5Module`` sharing the pytree's tensors."""

    def __init__(self, params: dict, cfg: MT5Config, ctx: D.Dist, **kw: Any) -> None:
        module = MT5Module(cfg, params)
        params = module.params()  # the nn.Parameters DDP fills .grad of; the optimizer owns them
        super().__init__(params, cfg, ctx, adapters=None, **kw)
        self.ddp = D.wrap_ddp(module, ctx)

    def compute(self, batches: list[dict], generator: torch.Generator) -> StepResult:
        return D.ddp_step(self.ddp, self.params, self.cfg, batches, self.ctx, dropout_rate=self.dropout,
                          generator=generator, max_grad_norm=self.max_grad_norm, autocast_dtype=self.autocast,
                          checkpoint_blocks=self.checkpoint_blocks)


def parameter_count(tree: dict) -> int:
    return sum(leaf.numel() for leaf in flatten_params(tree).values())
