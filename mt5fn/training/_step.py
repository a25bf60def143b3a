"""A pure training step: loss and gradients of the pytree, with accumulation and clipping.

``train_step`` is built on ``torch.func.grad_and_value``: it reads the
parameters, returns the loss, the gradient pytree, the number of target
tokens and the global gradient norm, and changes nothing (the update is
``apply_gradients``' job). Gradient accumulation is token-weighted: each
micro-batch contributes ``loss(reduction="sum") / total_target_tokens``, so
any split of a batch into micro-batches gives the gradient of the one big
batch's mean loss. Clipping follows ``torch.nn.utils.clip_grad_norm_``
(scale by ``max_norm / (norm + 1e-6)`` when that is below 1).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from ..functional import IGNORE_INDEX
from ..model import MT5Config, flatten_params, iter_leaves, tree_map, unflatten_params
from ..model import loss as model_loss
from ..model._validate import check_config, check_params

_BATCH_KEYS = ("input_ids", "labels", "attention_mask", "decoder_attention_mask")


class StepResult(NamedTuple):
    """What ``train_step`` returns.

    loss: 0-d float32 tensor, the mean cross-entropy over all target tokens of the step.
    grads: pytree shaped like the params (clipped when ``max_grad_norm`` is set).
    num_tokens: int, target tokens (labels != -100) over all micro-batches.
    grad_norm: 0-d float32 tensor, the global L2 norm of the gradients before clipping.
    """

    loss: Tensor
    grads: dict
    num_tokens: int
    grad_norm: Tensor


def _check_micro_batches(micro_batches: Any) -> list[Mapping[str, Tensor]]:
    if isinstance(micro_batches, Mapping):  # one batch, no accumulation
        micro_batches = [micro_batches]
    if not isinstance(micro_batches, Sequence) or not micro_batches:
        raise ValueError("micro_batches must be a non-empty list of batch dicts "
                         f"(input_ids, labels, optional attention_mask), got {type(micro_batches).__name__}")
    for index, batch in enumerate(micro_batches):
        if not isinstance(batch, Mapping) or "input_ids" not in batch or "labels" not in batch:
            raise ValueError(f"micro_batches[{index}] must be a dict with 'input_ids' and 'labels', "
                             f"got {type(batch).__name__}"
                             + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""))
        unknown = set(batch) - set(_BATCH_KEYS)
        if unknown:
            raise ValueError(f"micro_batches[{index}] has unknown keys {sorted(unknown)}; "
                             f"expected a subset of {list(_BATCH_KEYS)}")
        if not isinstance(batch["labels"], Tensor):
            raise TypeError(f"micro_batches[{index}]['labels'] must be a torch.Tensor, "
                            f"got {type(batch['labels']).__name__}")
    return list(micro_batches)


def global_norm(tree: Any) -> Tensor:
    """L2 norm of all leaves together, in float32 (0-d tensor)."""
    norms = [leaf.detach().float().norm() for leaf in iter_leaves(tree)]  # one 0-d per leaf
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_by_global_norm(grads: Any, max_norm: float, norm: Tensor | None = None) -> Any:
    """Scale ``grads`` so their global norm is at most ``max_norm`` (as ``clip_grad_norm_``)."""
    norm = global_norm(grads) if norm is None else norm
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # 0-d, 1 when already small enough
    return tree_map(lambda g: g * scale.to(g.dtype), grads)


def _autograd_grad_and_value(fn: Any) -> Any:
    """``grad_and_value(fn)`` for ``fn(params, batch) -> 0-d``, via ``torch.autograd.grad`` on fresh leaves."""

    def wrapped(params: dict, batch: Mapping[str, Tensor]) -> tuple[dict, Tensor]:
        with torch.enable_grad():
            leaves = tree_map(lambda leaf: leaf.detach().requires_grad_(), params)
            value = fn(leaves, batch)
            flat = flatten_params(leaves)
            grads = torch.autograd.grad(value, list(flat.values()), allow_unused=True)
        filled = {path: torch.zeros_like(leaf) if grad is None else grad
                  for (path, leaf), grad in zip(flat.items(), grads)}
        return unflatten_params(filled), value.detach()

    return wrapped


def train_step(params: dict, cfg: MT5Config, micro_batches: Any, *, dropout_rate: float = 0.0,
               generator: torch.Generator | None = None, max_grad_norm: float | None = None,
               autocast_dtype: torch.dtype | None = None) -> StepResult:
    """Loss and gradients of one optimisation step over one or more micro-batches.

    ``micro_batches``: a batch dict (``input_ids`` (B, S), ``labels`` (B, T)
    with -100 ignored, optional ``attention_mask`` / ``decoder_attention_mask``)
    or a list of them; their gradients are accumulated token-weighted.
    Dropout at ``dropout_rate`` draws from ``generator`` (micro-batches in
    order), so a step is reproducible from the generator's state.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward under
    ``torch.autocast`` on the parameters' device; the loss is float32 and the
    gradients have the parameters' dtypes. Nothing is updated in place.
    """
    check_config(cfg)
    check_params(params, cfg, need_decoder=True)
    batches = _check_micro_batches(micro_batches)
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float))
                                      or not max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
    if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be torch.bfloat16, torch.float16 or None, got {autocast_dtype!r}")

    num_tokens = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)
    if num_tokens == 0:
        raise ValueError("micro_batches hold no target tokens (every label is -100); nothing to learn from")

    # Detached views: the step must not build a graph through optimizer-owned leaves.
    primal = tree_map(lambda leaf: leaf.detach(), params)
    device_type = params["shared"].device.type

    def micro_loss(p: dict, batch: Mapping[str, Tensor]) -> Tensor:
        autocast = (torch.autocast(device_type=device_type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            summed = model_loss(p, cfg, batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                                decoder_attention_mask=batch.get("decoder_attention_mask"), reduction="sum",
                                dropout_rate=dropout_rate, generator=generator)
        return summed.float() / num_tokens

    # torch 2.13's functorch mis-handles the backward of an autocast scaled_dot_product_attention
    # whose mask needs a gradient (the relative-position bias): it fails with "expected scalar
    # type BFloat16 but found Float". Under autocast the same pure function is differentiated by
    # the reverse-mode engine directly, which is also what torch.amp documents (autocast
    # around the forward only).
    grad_fn = torch.func.grad_and_value(micro_loss) if autocast_dtype is None else _autograd_grad_and_value(micro_loss)
    grads, total_loss = None, None
    for batch in batches:
        micro_grads, value = grad_fn(primal, batch)
        if grads is None:
            grads, total_loss = micro_grads, value
        else:
            flat_acc, flat_new = list(iter_leaves(grads)), list(iter_leaves(micro_grads))
            torch._foreach_add_(flat_acc, flat_new)  # grads is ours: accumulate in place
            total_loss = total_loss + value
    assert grads is not None and total_loss is not None

    grad_norm = global_norm(grads)
    if max_grad_norm is not None:
        grads = clip_by_global_norm(grads, float(max_grad_norm), grad_norm)
    return StepResult(loss=total_loss.detach(), grads=grads, num_tokens=num_tokens, grad_norm=grad_norm)
