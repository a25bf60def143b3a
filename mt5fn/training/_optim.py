"""``torch.optim`` over the parameter pytree (no re-implemented optimizers).

The optimizer and the pytree share tensors: ``make_optimizer(params)`` hands
the pytree's leaf tensors themselves (named by their dotted paths,
``flatten_params`` order) to ``torch.optim.AdamW`` / ``torch.optim.Adafactor``.
``apply_gradients`` puts each gradient on its leaf's ``.grad`` and calls
``optimizer.step()``, which updates the leaves in place, so the same
``params`` dict holds the new values afterwards and is passed unchanged to the
next ``train_step``. Hence the rule: build the optimizer from the exact pytree
you train, and do not replace its leaves (``tree_map`` makes new tensors;
load new values with ``leaf.copy_(...)`` under ``torch.no_grad()``).

Weight decay (when nonzero) applies to matrices only: 1-D leaves (the RMSNorm
scales) sit in a second group with ``weight_decay=0``, the usual practice
for normalisation weights.

A trainable subset (``trainable``: a predicate on dotted paths) gives the
optimizer only the selected leaves: the frozen ones get no optimizer state
(no Adam moments) and ``apply_gradients`` takes the subset's gradients
(``train_step(..., trainable=...)``'s). For LoRA, build the optimizer from
the adapter pytree itself: ``make_optimizer(adapters)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..checks import check_real
from ..model import flatten_params

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adafactor": torch.optim.Adafactor}


def make_optimizer(params: dict, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0, *,
                   trainable: Callable[[str], bool] | None = None, **kwargs: Any) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer owning the pytree's leaves.

    ``name``: ``"adamw"`` (``torch.optim.AdamW``) or ``"adafactor"``
    (``torch.optim.Adafactor``, factored second moments, the T5 choice; its
    ``lr`` multiplies the relative step size, 1e-2 is torch's default).
    ``kwargs`` pass through (``betas``, ``eps``, ``beta2_decay``, ...).
    Parameter groups carry ``param_names`` (the dotted pytree paths), so
    ``optimizer.state_dict()`` is readable and checkable on resume.
    ``trainable``: a predicate on those paths; only the leaves it accepts are optimised.
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"name must be one of {sorted(_OPTIMIZERS)}, got {name!r}")
    check_real("lr", lr, above=0.0, words="a positive number")
    check_real("weight_decay", weight_decay, at_least=0.0, words="a non-negative number")
    flat = flatten_params(params)
    if not flat:
        raise ValueError("params has no tensor leaves to optimise")
    if trainable is not None:
        if not callable(trainable):
            raise TypeError(f"trainable must be a predicate on dotted paths or None, got {type(trainable).__name__}")
        flat = {path: leaf for path, leaf in flat.items() if trainable(path)}
        if not flat:
            raise ValueError("trainable selects no parameter path (paths look like 'encoder.blocks.0.attn.q')")
    seen: dict[int, str] = {}
    for path, leaf in flat.items():
        if not leaf.dtype.is_floating_point:
            raise ValueError(f"params[{path!r}] has dtype {leaf.dtype}; only floating tensors can be optimised")
        if not leaf.is_leaf:
            raise ValueError(f"params[{path!r}] is not a leaf tensor (it has autograd history); "
                             "detach it (and set requires_grad_ if you need autograd) before optimising")
        if id(leaf) in seen:
            raise ValueError(f"params[{path!r}] is the same tensor as params[{seen[id(leaf)]!r}]")
        seen[id(leaf)] = path
    decay = [(path, leaf) for path, leaf in flat.items() if leaf.dim() > 1]
    no_decay = [(path, leaf) for path, leaf in flat.items() if leaf.dim() <= 1]
    if weight_decay > 0:
        groups = [{"params": decay, "weight_decay": float(weight_decay)},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups = [group for group in groups if group["params"]]
    else:
        groups = [{"params": list(flat.items()), "weight_decay": 0.0}]
    return _OPTIMIZERS[name](groups, lr=float(lr), **kwargs)


def apply_gradients(optimizer: torch.optim.Optimizer, params: dict, grads: dict) -> None:
    """Set each leaf's ``.grad`` from the ``grads`` pytree and take one optimizer step (in place).

    ``params`` must be the pytree the optimizer was built from (same leaf
    tensors); ``grads`` holds a gradient for exactly the leaves the optimizer
    owns (``train_step``'s output, the trainable subset's when there is one).
    The ``.grad`` fields are cleared afterwards so the gradients do not
    outlive the step.
    """
    all_leaves = flatten_params(params)
    grad_leaves = flatten_params(grads)
    names = [name for group in optimizer.param_groups for name in group.get("param_names", [])]
    expected = names if names else list(all_leaves)
    if sorted(grad_leaves) != sorted(expected):
        differ = sorted(set(expected) ^ set(grad_leaves))
        raise ValueError(f"grads must hold exactly the optimizer's leaves (the structure of params or of its "
                         f"trainable subset); paths differ: {differ[:5]}")
    missing = [path for path in grad_leaves if path not in all_leaves]
    if missing:
        raise ValueError(f"grads has paths that params lacks: {missing[:5]}")
    leaves = {path: all_leaves[path] for path in grad_leaves}
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for path, leaf in leaves.items():
        if id(leaf) not in owned:
            raise ValueError(f"params[{path!r}] is not a tensor this optimizer owns; build the optimizer "
                             "with make_optimizer(params) from this very pytree and update it in place")
        grad = grad_leaves[path]
        if grad.shape != leaf.shape:
            raise ValueError(f"grads[{path!r}] has shape {tuple(grad.shape)}, params has {tuple(leaf.shape)}")
        leaf.grad = grad.detach().to(dtype=leaf.dtype, device=leaf.device)
    optimizer.step()
    for leaf in leaves.values():
        leaf.grad = None
