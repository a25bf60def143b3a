"""LoRA adapters as a pytree: ``init``, ``apply`` (a pure, differentiable merge) and ``merge``.

Hu et al. 2021 ("LoRA: Low-Rank Adaptation of Large Language Models", sec.
4.1): a frozen weight ``W`` (out, in) is adapted as ``W + (alpha / r) B A``
with ``A`` (r, in) and ``B`` (out, r); ``B`` starts at zero, so a fresh
adapter changes nothing, and only ``A`` and ``B`` train.

The adapter pytree mirrors the parameter tree at the adapted projections and
holds tensor leaves only::

    {"encoder": {"blocks": [{"attn": {"q": {"A": (r, d), "B": (H d_kv, r)}, "v": {...}}}, ...]},
     "decoder": {"blocks": [{"self_attn": {...}, "cross_attn": {...}, "mlp": {"wo": {...}}}, ...]},
     "alpha": (),     # lora_alpha: the scale is alpha / r, r = A.shape[0]
     "dropout": ()}   # lora_dropout, kept for the PEFT file (see below)

(both float32, float64 for a float64 model).

A block without adapted projections is an empty dict, so the lists keep the
model's depth. ``alpha`` and ``dropout`` are settings, not weights: ``apply``
reads ``alpha`` detached (its gradient is exactly zero) and an optimiser must
skip both -- ``is_trainable(path)`` tells them apart by their dotted path.

``apply`` merges the weights, so the adapted model runs the very block
functions of ``forward`` (and works under ``grad``, ``vmap``, ``compile``).
LoRA's dropout on the adapter's input has no weight-merge equivalent: it is
recorded and written to PEFT's ``adapter_config.json`` but mt5fn does not
apply it (the model's own ``dropout_rate`` does apply).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..kernels import linear_form
from .. import checks as check
from ..model import MT5Config, check_config
from ._sites import STACKS, Site, expand_targets, sites, sublayer_names

SETTINGS = ("alpha", "dropout")
FACTORS = ("A", "B")


def is_trainable(path: str) -> bool:
    """True for the dotted path of an ``A`` or ``B`` factor (``flatten_params`` order), False for settings."""
    return path.rsplit(".", 1)[-1] in FACTORS


def _stacks_of(params: dict) -> tuple[str, ...]:
    return tuple(stack for stack in STACKS if stack in params)


def _empty_tree(cfg: MT5Config, stacks: tuple[str, ...]) -> dict:
    return {stack: {"blocks": [{} for _ in range(cfg.num_layers if stack == "encoder" else cfg.num_decoder_layers)]}
            for stack in stacks}


def _insert(tree: dict, site: Site, node: Any) -> None:
    stack, block, sub, name = site.path
    tree[stack]["blocks"][block].setdefault(sub, {})[name] = node


def _weight(params: dict, site: Site) -> Any:
    stack, block, sub, name = site.path
    holder = params[stack]["blocks"][block][sub]
    if name not in holder:  # e.g. q/k/v fused into "qkv" by prepare_decoding
        raise ValueError(f"params: {site.dotted} is not a leaf of this tree ({stack}.blocks.{block}.{sub} holds "
                         f"{sorted(holder)}); LoRA adapts the plain parameter tree (apply adapters before "
                         "prepare_decoding or quantize)")
    return holder[name]


def init(params: dict, cfg: MT5Config, rank: int, alpha: float, targets: tuple[str, ...] | list[str] = ("q", "v"),
         dropout: float = 0.0, seed: int = 0) -> dict:
    """Fresh adapters of rank ``rank`` on every projection named in ``targets`` (both stacks).

    ``A`` is drawn as PEFT draws it (``kaiming_uniform_(a=sqrt(5))``: U(-1/sqrt(in), 1/sqrt(in)))
    from ``seed`` on the CPU, ``B`` is zero; both take each weight's dtype and device.
    ``targets``: names from ``q, k, v, o, wi, wi_0, wi_1, wo`` (``wi`` on a gated
    feed-forward: ``wi_0`` and ``wi_1``). An encoder-only tree gets encoder adapters.
    """
    check_config(cfg)
    check.check_params(params, cfg)
    check.check_int("rank", rank, 1)
    alpha = check.check_real("alpha", alpha)
    dropout = check.check_real("dropout", dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    check.check_int("seed", seed, 0)
    names = expand_targets(targets, cfg)
    stacks = _stacks_of(params)
    chosen = [site for site in sites(cfg, stacks) if site.name in names]
    for site in chosen:
        _dense(site, _weight(params, site))
    # The pre-flight every allocating entry point runs: rank 10**9 is refused here, naming the rank,
    # not by the allocator after minutes.
    widest = max((site.shape[1] for site in chosen), default=0)
    factors = sum(site.shape[0] + site.shape[1] for site in chosen)
    check.preflight.check_buffers("lora.init", f"rank={rank} on {len(chosen)} projections", [
        ("the LoRA factors A and B", (factors, rank), check.params_dtype(params).itemsize),
        ("the float32 draw of the widest A", (rank, widest), 4)], check.params_device(params))
    generator = torch.Generator().manual_seed(seed)
    tree = _empty_tree(cfg, stacks)
    for site in chosen:
        weight = _weight(params, site)
        out_features, in_features = site.shape
        bound = 1.0 / math.sqrt(in_features)
        a = torch.empty(rank, in_features).uniform_(-bound, bound, generator=generator)  # (r, in)
        _insert(tree, site, {"A": a.to(device=weight.device, dtype=weight.dtype),
                             "B": torch.zeros(out_features, rank, device=weight.device, dtype=weight.dtype)})
    tree.update(settings(alpha, dropout, params))
    return tree


def settings(alpha: float, dropout: float, params: dict) -> dict[str, Tensor]:
    """The ``alpha`` and ``dropout`` leaves: float32, or float64 for a float64 model."""
    shared = params["shared"]
    dtype = torch.promote_types(shared.dtype, torch.float32)
    return {"alpha": torch.tensor(alpha, dtype=dtype, device=shared.device),
            "dropout": torch.tensor(dropout, dtype=dtype, device=shared.device)}


def _dense(site: Site, weight: Any) -> None:
    if linear_form(weight) != "dense":
        raise ValueError(f"params: {site.dotted} is a {linear_form(weight) or 'non-tensor'} weight leaf; LoRA "
                         "adapts plain (out, in) tensors (apply adapters before prepare_decoding or quantize)")


def _shape_error(path: str, got: tuple[int, ...], want: str, site: Site) -> ValueError:
    return ValueError(f"adapters: {path} has shape {got} but the model's {site.dotted} (out, in) = {site.shape} "
                      f"needs {want}")


def adapter_sites(adapters: Any, cfg: MT5Config) -> list[tuple[Site, Tensor, Tensor]]:
    """Check ``adapters`` against ``cfg`` (structure and shapes: safe under transforms) and list
    ``(site, A, B)`` in pytree order. Errors name the offending path."""
    if not isinstance(adapters, dict):
        raise TypeError(f"adapters must be an mt5fn.lora adapter pytree (a dict), got {type(adapters).__name__}")
    extra = sorted(set(map(str, adapters)) - set(STACKS) - set(SETTINGS))
    if extra:
        raise ValueError(f"adapters has unexpected top-level keys {extra} (expected 'encoder', 'decoder', "
                         f"'alpha', 'dropout')")
    for setting in SETTINGS:
        value = adapters.get(setting)
        if not isinstance(value, Tensor) or value.dim() != 0 or not value.dtype.is_floating_point:
            got = "missing" if value is None else (f"shape {tuple(value.shape)}" if isinstance(value, Tensor)
                                                   else type(value).__name__)
            raise ValueError(f"adapters: {setting!r} must be a 0-d floating tensor, got {got}")
    by_path = {site.path: site for site in sites(cfg)}
    found: list[tuple[Site, Tensor, Tensor]] = []
    for stack in _stacks_of(adapters):
        node = adapters[stack]
        depth = cfg.num_layers if stack == "encoder" else cfg.num_decoder_layers
        if not isinstance(node, dict) or set(node) != {"blocks"}:
            raise ValueError(f"adapters: {stack} must be a dict with 'blocks' only")
        blocks = node["blocks"]
        if not isinstance(blocks, list) or len(blocks) != depth:
            got = f"{len(blocks)} blocks" if isinstance(blocks, list) else type(blocks).__name__
            raise ValueError(f"adapters: {stack}.blocks must be a list of {depth} blocks (the config's depth), "
                             f"got {got}")
        allowed = sublayer_names(cfg, stack)
        for index, block in enumerate(blocks):
            where = f"{stack}.blocks.{index}"
            if not isinstance(block, dict):
                raise ValueError(f"adapters: {where} must be a dict, got {type(block).__name__}")
            for sub, projections in block.items():
                if sub not in allowed:
                    raise ValueError(f"adapters: {where} has {sub!r}, not a sublayer of a {stack} block "
                                     f"({sorted(allowed)})")
                if not isinstance(projections, dict):
                    raise ValueError(f"adapters: {where}.{sub} must be a dict, got {type(projections).__name__}")
                for name, factors in projections.items():
                    path = f"{where}.{sub}.{name}"
                    if name not in allowed[sub]:
                        raise ValueError(f"adapters: {path} does not fit the model: {where}.{sub} has the "
                                         f"projections {list(allowed[sub])}")
                    if not isinstance(factors, dict) or set(factors) != set(FACTORS):
                        raise ValueError(f"adapters: {path} must be a dict with 'A' and 'B'")
                    site = by_path[(stack, index, sub, name)]
                    found.append((site, *_factors(path, factors, site)))
    if not found:
        raise ValueError("adapters hold no adapted projection")
    ranks = {int(a.shape[0]) for _, a, _ in found}
    if len(ranks) != 1:
        first = found[0]
        other = next(entry for entry in found if entry[1].shape[0] != first[1].shape[0])
        raise ValueError(f"adapters: every projection needs the same rank; {first[0].dotted} has r = "
                         f"{first[1].shape[0]} but {other[0].dotted} has r = {other[1].shape[0]}")
    return found


def _factors(path: str, factors: dict, site: Site) -> tuple[Tensor, Tensor]:
    a, b = factors["A"], factors["B"]
    for key, value in (("A", a), ("B", b)):
        if not isinstance(value, Tensor) or not value.dtype.is_floating_point:
            raise ValueError(f"adapters: {path}.{key} must be a floating tensor, got "
                             f"{type(value).__name__ if not isinstance(value, Tensor) else value.dtype}")
    out_features, in_features = site.shape
    if a.dim() != 2 or a.shape[1] != in_features:
        raise _shape_error(f"{path}.A", tuple(a.shape), f"(r, {in_features})", site)
    if b.dim() != 2 or tuple(b.shape) != (out_features, a.shape[0]):
        raise _shape_error(f"{path}.B", tuple(b.shape), f"({out_features}, r) with r = {a.shape[0]} "
                                                        "(A's rows)", site)
    return a, b


def rank_of(adapters: dict, cfg: MT5Config) -> int:
    """The rank ``r`` of checked adapters."""
    return int(adapter_sites(adapters, cfg)[0][1].shape[0])


def _check_pair(params: dict, adapters: Any, cfg: MT5Config) -> list[tuple[Site, Tensor, Tensor]]:
    check_config(cfg)
    check.check_params(params, cfg)
    found = adapter_sites(adapters, cfg)
    missing = sorted({site.path[0] for site, _, _ in found} - set(_stacks_of(params)))
    if missing:
        raise ValueError(f"adapters adapt the {missing[0]} but params have no {missing[0]} (an encoder-only tree)")
    for site, _, _ in found:
        _dense(site, _weight(params, site))
    return found


def apply(params: dict, adapters: dict, cfg: MT5Config) -> dict:
    """``params`` with every adapted weight replaced by ``W + (alpha / r) B A`` (pure, differentiable).

    Untouched leaves are the input's own tensors (no copies). Differentiating
    ``loss(apply(params, adapters, cfg), ...)`` with ``torch.func.grad`` with
    respect to ``adapters`` trains the adapters alone; ``alpha`` is read
    detached, so its gradient is zero. The sum is formed in the wider of the
    two dtypes and cast back to the weight's dtype.
    """
    found = _check_pair(params, adapters, cfg)
    rank = int(found[0][1].shape[0])
    scale = adapters["alpha"].detach() / rank  # () the LoRA scale
    new = {**params}
    copied: set[tuple] = set()

    def slot(site: Site) -> dict:
        """The sublayer dict of ``site`` in ``new``, shallow-copied on the way down (once)."""
        stack, block, sub, _ = site.path
        if (stack,) not in copied:
            new[stack] = {**new[stack], "blocks": list(new[stack]["blocks"])}
            copied.add((stack,))
        blocks = new[stack]["blocks"]
        if (stack, block) not in copied:
            blocks[block] = {**blocks[block]}
            copied.add((stack, block))
        if (stack, block, sub) not in copied:
            blocks[block][sub] = {**blocks[block][sub]}
            copied.add((stack, block, sub))
        return blocks[block][sub]

    for site, a, b in found:
        holder = slot(site)
        weight = holder[site.name]  # (out, in)
        wide = torch.promote_types(weight.dtype, a.dtype)
        delta = (b.to(wide) @ a.to(wide)) * scale.to(wide)  # (out, in)
        holder[site.name] = (weight.to(wide) + delta).to(weight.dtype)
    return new


def merge(params: dict, adapters: dict, cfg: MT5Config) -> dict:
    """New parameters with the adapters folded in (no autograd history): for inference and saving.

    Equal to ``apply``; the adapted leaves are new tensors, the rest are ``params``' own.
    """
    with torch.no_grad():
        merged = apply(params, adapters, cfg)
    return merged
