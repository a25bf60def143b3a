"""A pure training step: loss and gradients of the pytree, with accumulation and clipping.

``train_step`` reads the parameters, returns the loss, the gradient pytree of
the *trainable* leaves, the number of target tokens and the global gradient
norm, and changes nothing (the update is ``apply_gradients``' job).

* Gradients come from plain reverse-mode autograd on fresh detached leaves
  (``torch.autograd.grad``), not ``torch.func.grad``: both give the same
  numbers bit for bit, but functorch's wrapper tensors keep about twice the
  activation memory alive (measured on the mt5-small shape at 4096 input
  tokens, batch 1: see docs/performance.md), so the lean one
  is the default. The step stays a pure function of its arguments.
* Gradient accumulation is token-weighted: each micro-batch contributes
  ``loss(reduction="sum") / total_target_tokens``, so any split of a batch
  into micro-batches gives the gradient of the one big batch's mean loss.
* Clipping follows ``torch.nn.utils.clip_grad_norm_`` (scale by
  ``max_norm / (norm + 1e-6)`` when that is below 1).
* ``trainable`` picks what is trained: ``None`` (everything), a predicate on
  dotted paths (``lambda path: "attn" in path``), or a LoRA adapter pytree
  (``mt5fn.lora.init``), whose ``A`` / ``B`` factors are then the trained
  leaves (``lora.is_trainable``) while the base weights and the adapters'
  ``alpha`` / ``dropout`` settings stay frozen. Frozen leaves are detached without
  ``requires_grad``: autograd builds no gradient buffer for them.
* ``checkpoint_blocks=True`` recomputes each block in the backward
  (``mt5fn.loss(..., checkpoint_blocks=True)``): same gradients, far lower peak.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from ..checks import INT8_ONLY, check_bool, check_params, check_real, int8_leaf
from ..functional import IGNORE_INDEX
from ..model import MT5Config, check_config, flatten_params, iter_leaves, tree_map
from ..model import loss as model_loss

_BATCH_KEYS = ("input_ids", "labels", "attention_mask", "decoder_attention_mask")


class StepResult(NamedTuple):
    """What ``train_step`` returns.

    loss: 0-d float32 tensor, the mean cross-entropy over all target tokens of the step.
    grads: pytree of the trainable leaves (clipped when ``max_grad_norm`` is set): shaped
        like the params when everything trains, like the adapters for LoRA, and for a
        predicate the params' structure holding only the selected leaves (a block with
        none selected is an empty dict).
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
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_by_global_norm(grads: Any, max_norm: float, norm: Tensor | None = None) -> Any:
    """Scale ``grads`` so their global norm is at most ``max_norm`` (as ``clip_grad_norm_``)."""
    norm = global_norm(grads) if norm is None else norm
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # 0-d, 1 when already small enough
    return tree_map(lambda g: g * scale.to(g.dtype), grads)


def subtree(tree: Any, keep: Callable[[str], bool], prefix: str = "") -> Any:
    """``tree`` with only the leaves whose dotted path ``keep`` accepts (lists keep their length,
    an unselected element becomes an empty dict), so ``flatten_params`` gives the same paths."""
    if isinstance(tree, Tensor):
        return tree
    if isinstance(tree, dict):
        out = {}
        for key, child in tree.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(child, Tensor):
                if keep(path):
                    out[key] = child
            else:
                kept = subtree(child, keep, path)
                if flatten_params(kept) or isinstance(child, list):
                    out[key] = kept
        return out
    if isinstance(tree, (list, tuple)):
        return [subtree(child, keep, f"{prefix}.{index}" if prefix else str(index)) if not isinstance(child, Tensor)
                else child for index, child in enumerate(tree)]
    raise TypeError(f"params: unexpected leaf of type {type(tree).__name__} at {prefix!r}")


class Trainable(NamedTuple):
    """The split of one step's inputs into trained and frozen tensors."""

    kind: str  # "all", "subset" or "adapters"
    keep: Callable[[str], bool] | None
    adapters: dict | None


def resolve_trainable(trainable: Any) -> Trainable:
    if trainable is None:
        return Trainable("all", None, None)
    if isinstance(trainable, dict):
        if not flatten_params(trainable):
            raise ValueError("trainable: the adapter pytree has no tensor leaves")
        return Trainable("adapters", None, trainable)
    if callable(trainable):
        return Trainable("subset", trainable, None)
    raise TypeError("trainable must be None, a predicate on dotted parameter paths, or a LoRA adapter pytree "
                    f"(mt5fn.lora.init), got {type(trainable).__name__}")


def _loss_fn(params: dict, cfg: MT5Config, trainable: Trainable, num_tokens: int, *, dropout_rate: float,
             generator: torch.Generator | None, autocast_dtype: torch.dtype | None,
             checkpoint_blocks: bool, adapters: dict | None = None) -> Callable[[Any, Mapping[str, Tensor]], Tensor]:
    """``f(trained_leaves_tree, batch) -> this micro-batch's share of the mean loss``."""
    device_type = params["shared"].device.type

    def micro_loss(trained: Any, batch: Mapping[str, Tensor]) -> Tensor:
        if trainable.kind == "adapters":
            from ..lora import apply as apply_adapters

            assert adapters is not None  # the trained factors, with the adapters' settings (alpha, dropout)
            full = _replace_leaves(adapters, {**flatten_params(adapters), **flatten_params(trained)})
            effective = apply_adapters(params, full, cfg)
        elif trainable.kind == "subset":
            flat = {**flatten_params(params), **flatten_params(trained)}
            effective = _replace_leaves(params, flat)
        else:
            effective = trained
        autocast = (torch.autocast(device_type=device_type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            summed = model_loss(effective, cfg, batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                                decoder_attention_mask=batch.get("decoder_attention_mask"), reduction="sum",
                                dropout_rate=dropout_rate, generator=generator, checkpoint_blocks=checkpoint_blocks)
        return summed.float() / num_tokens

    return micro_loss


def _replace_leaves(tree: Any, flat: dict[str, Tensor], prefix: str = "") -> Any:
    if isinstance(tree, Tensor):
        return flat[prefix]
    if isinstance(tree, dict):
        return {key: _replace_leaves(child, flat, f"{prefix}.{key}" if prefix else str(key))
                for key, child in tree.items()}
    return [_replace_leaves(child, flat, f"{prefix}.{index}" if prefix else str(index))
            for index, child in enumerate(tree)]


def autograd_grad_and_value(fn: Callable[[Any, Any], Tensor]) -> Callable[[Any, Any], tuple[Any, Tensor]]:
    """``torch.func.grad_and_value(fn)`` for ``fn(tree, batch) -> 0-d``, by reverse-mode autograd on
    fresh detached leaves (same numbers, about half the activation memory of functorch's wrappers)."""

    def wrapped(tree: Any, batch: Any) -> tuple[Any, Tensor]:
        with torch.enable_grad():
            leaves = tree_map(lambda leaf: leaf.detach().requires_grad_(), tree)
            value = fn(leaves, batch)
            flat = flatten_params(leaves)
            grads = torch.autograd.grad(value, list(flat.values()), allow_unused=True)
        filled = {path: torch.zeros_like(leaf) if grad is None else grad
                  for (path, leaf), grad in zip(flat.items(), grads)}
        return _replace_leaves(tree, filled), value.detach()

    return wrapped


def train_step(params: dict, cfg: MT5Config, micro_batches: Any, *, dropout_rate: float = 0.0,
               generator: torch.Generator | None = None, max_grad_norm: float | None = None,
               autocast_dtype: torch.dtype | None = None, checkpoint_blocks: bool = False,
               trainable: Any = None) -> StepResult:
    """Loss and gradients of one optimisation step over one or more micro-batches.

    ``micro_batches``: a batch dict (``input_ids`` (B, S), ``labels`` (B, T)
    with -100 ignored, optional ``attention_mask`` / ``decoder_attention_mask``)
    or a list of them; their gradients are accumulated token-weighted.
    Dropout at ``dropout_rate`` draws from ``generator`` (micro-batches in
    order), so a step is reproducible from the generator's state.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward under
    ``torch.autocast`` on the parameters' device; the loss is float32 and the
    gradients have the parameters' dtypes. ``checkpoint_blocks`` recomputes
    each block in the backward. ``trainable``: ``None`` (all leaves), a
    predicate on dotted paths, or a LoRA adapter pytree (see the module
    docstring); ``grads`` then holds the trainable leaves only. Nothing is
    updated in place.
    """
    check_config(cfg)
    check_params(params, cfg, need_decoder=True)
    quantized = int8_leaf(params)
    if quantized is not None:  # the step's backward would run through it (torch's error would not name it)
        raise TypeError(f"params: {quantized} is an int8 weight leaf; train_step differentiates the model: "
                        f"{INT8_ONLY}")
    batches = _check_micro_batches(micro_batches)
    if max_grad_norm is not None:
        check_real("max_grad_norm", max_grad_norm, above=0.0, words="a positive number or None")
    if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be torch.bfloat16, torch.float16 or None, got {autocast_dtype!r}")
    check_bool("checkpoint_blocks", checkpoint_blocks)
    choice = resolve_trainable(trainable)

    num_tokens = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)
    if num_tokens == 0:
        raise ValueError("micro_batches hold no target tokens (every label is -100); nothing to learn from")

    # Detached views: the step must not build a graph through optimizer-owned leaves.
    frozen = tree_map(lambda leaf: leaf.detach(), params)
    adapters = None
    if choice.kind == "adapters":
        from ..lora import is_trainable

        adapters = tree_map(lambda leaf: leaf.detach(), choice.adapters)
        trained = subtree(adapters, is_trainable)  # the A / B factors; alpha and dropout are settings
    elif choice.kind == "subset":
        trained = subtree(frozen, choice.keep)
        if not flatten_params(trained):
            raise ValueError("trainable: the predicate selects no parameter path (paths look like "
                             "'encoder.blocks.0.attn.q')")
    else:
        trained = frozen
    micro_loss = _loss_fn(frozen, cfg, choice, num_tokens, dropout_rate=dropout_rate, generator=generator,
                          autocast_dtype=autocast_dtype, checkpoint_blocks=checkpoint_blocks, adapters=adapters)
    grad_fn = autograd_grad_and_value(micro_loss)
    grads, total_loss = None, None
    for batch in batches:
        micro_grads, value = grad_fn(trained, batch)
        if grads is None:
            grads, total_loss = micro_grads, value
        else:
            flat_acc, flat_new = list(iter_leaves(grads)), list(iter_leaves(micro_grads))
            torch._foreach_add_(flat_acc, flat_new)  # grads is ours: accumulate in place
            total_loss = total_loss + value
    assert grads is not None and total_loss is not None

    grad_norm = global_norm(grads)
    if max_grad_norm is not None:
        # the gradients are this step's own fresh tensors: scale them in place (clip_by_global_norm's
        # values, without a second full-size copy of every gradient)
        scale = torch.clamp(float(max_grad_norm) / (grad_norm + 1e-6), max=1.0)  # 0-d
        leaves = list(iter_leaves(grads))
        for dtype in {leaf.dtype for leaf in leaves}:
            torch._foreach_mul_([leaf for leaf in leaves if leaf.dtype == dtype], scale.to(dtype))
    return StepResult(loss=total_loss.detach(), grads=grads, num_tokens=num_tokens, grad_norm=grad_norm)
