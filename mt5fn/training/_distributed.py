"""Data-parallel training under ``torchrun``: process group, DDP step, small collectives.

``torchrun --nproc_per_node=N`` (or multi-node with ``--nnodes``,
``--node_rank`` / ``--rdzv-endpoint``) sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; ``setup`` then joins the process group -- NCCL on GPUs, gloo
on CPU. Without those variables everything here degrades to one process.

The DDP step wraps an ``MT5Module``. DDP *averages* gradients over ranks, so
each rank scales its summed token loss by ``world_size / global_tokens``
(``global_tokens`` = target tokens of the whole global batch, all-reduced
first): the average of those is exactly the gradient of the global batch's
mean loss, which is what a single process computes with ``train_step``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..functional import IGNORE_INDEX
from ..model import iter_leaves, tree_map
from ._step import StepResult, clip_by_global_norm, global_norm


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (None: cuda when available) -> this rank's device, or a
    ``ValueError`` naming ``--device`` when the value is malformed or the device is absent."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible CUDA device"
        raise ValueError(f"--device {device!r}: CUDA is not available here ({build}, torch {torch.__version__}); "
                         "use --device cpu")
    count = torch.cuda.device_count()
    index = local_rank if world_size > 1 or device == "cuda" else int(device[5:])
    if index >= count:
        raise ValueError(f"--device {device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def setup(device: str | None = None) -> Dist:
    """Join the process group when launched by torchrun; choose the device of this rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, world_size)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return Dist(rank, world_size, local_rank, dev)


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def all_sum(ctx: Dist, value: float | int, dtype: torch.dtype = torch.float64) -> float:
    """Sum a Python number over ranks (float64, so token counts stay exact)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=dtype, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.item()


def any_rank(ctx: Dist, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a Ctrl-C seen by one process)."""
    return bool(all_sum(ctx, 1 if flag else 0) > 0) if ctx.enabled else flag


def broadcast_object(ctx: Dist, obj):
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(module: torch.nn.Module, ctx: Dist) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None,
                                   broadcast_buffers=False)


def ddp_step(ddp: torch.nn.Module, params: dict, cfg, micro_batches: Sequence[Mapping[str, Tensor]], ctx: Dist, *,
             dropout_rate: float, generator: torch.Generator | None, max_grad_norm: float | None,
             autocast_dtype: torch.dtype | None = None, checkpoint_blocks: bool = False) -> StepResult:
    """One data-parallel step over this rank's micro-batches; returns what ``train_step`` would for the
    global batch (loss, all-reduced gradients, global token count, grad norm)."""
    local_tokens = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in micro_batches)
    global_tokens = int(all_sum(ctx, local_tokens))
    if global_tokens == 0:
        raise ValueError("the global batch holds no target tokens; nothing to learn from")
    scale = ctx.world_size / global_tokens
    local_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last else ddp.no_sync()  # all-reduce once, after the last
        autocast = (torch.autocast(device_type=ctx.device.type, dtype=autocast_dtype) if autocast_dtype
                    else contextlib.nullcontext())
        with sync:
            with autocast:  # the module returns mt5fn.loss (fused head + cross-entropy) given labels
                summed = ddp(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                             decoder_attention_mask=batch.get("decoder_attention_mask"), labels=batch["labels"],
                             reduction="sum", dropout_rate=dropout_rate, generator=generator,
                             checkpoint_blocks=checkpoint_blocks)
            (summed * scale).backward()
        local_loss += summed.detach().double()
    loss = torch.tensor(all_sum(ctx, local_loss.item()) / global_tokens, dtype=torch.float32)
    grads = tree_map(lambda p: p.grad if p.grad is not None else torch.zeros_like(p), params)
    for leaf in iter_leaves(params):
        leaf.grad = None
    norm = global_norm(grads)
    if max_grad_norm is not None:
        grads = clip_by_global_norm(grads, float(max_grad_norm), norm)
    return StepResult(loss=loss, grads=grads, num_tokens=global_tokens, grad_norm=norm)

