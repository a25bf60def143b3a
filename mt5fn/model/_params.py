"""The parameter pytree: its layout, its initialisation, and small tree helpers.

Layout (plain dicts and lists, tensor leaves only, weights ``[out, in]``)::

    {"shared": (V, d),
     "encoder": {"rel_bias": (buckets, H),                 # t5 / mt5 only
                 "blocks": [{"rel_bias": (buckets, H),      # umt5 only: one per block
                             "attn_norm": (d,),
                             "attn": {"q": (H*d_kv, d), "k": .., "v": .., "o": (d, H*d_kv)},
                             "mlp_norm": (d,),
                             "mlp": {"wi_0": (d_ff, d), "wi_1": (d_ff, d), "wo": (d, d_ff)}
                                    # or {"wi": (d_ff, d), "wo": (d, d_ff)} for relu
                            }, ...],
                 "final_norm": (d,)},
     "decoder": {"rel_bias": (buckets, H),                  # t5 / mt5 only
                 "blocks": [{"rel_bias": ..,                 # umt5 only
                             "self_attn_norm": (d,), "self_attn": {q, k, v, o},
                             "cross_attn_norm": (d,), "cross_attn": {q, k, v, o},
                             "mlp_norm": (d,), "mlp": {...}}, ...],
                 "final_norm": (d,)},
     "lm_head": (V, d)}                                      # absent when tied to "shared"

Tying is the absence of ``lm_head``: one tensor never sits under two keys.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..checks import preflight
from ._config import MT5Config
from ..checks import check_device, check_seed


def init_params(cfg: MT5Config, seed: int = 0, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> dict:
    """Fresh parameters drawn as transformers initialises T5 (``initializer_factor=1``).

    Embedding and untied head N(0, 1); q N(0, (d_model d_kv)^-1/2); k, v and the
    FFN input N(0, d_model^-1/2); o N(0, (H d_kv)^-1/2); FFN output N(0, d_ff^-1/2);
    relative-position tables N(0, d_model^-1/2); norms 1. The draw is on the CPU
    from ``seed`` so it is the same on every device. ``dtype=torch.float16``
    keeps every FFN ``wo`` in float32, as transformers does.
    """
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    check_seed("seed", seed)
    device = check_device("device", device)
    preflight.check_init(cfg, dtype, device)
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float, keep_fp32: bool = False) -> Tensor:
        weight = torch.empty(shape).normal_(0.0, std, generator=generator)
        return weight.to(device=device, dtype=torch.float32 if keep_fp32 else dtype)

    def ones(size: int) -> Tensor:
        return torch.ones(size, device=device, dtype=dtype)

    d, inner, d_ff = cfg.d_model, cfg.inner_dim, cfg.d_ff

    def attn() -> dict:
        return {"q": normal(inner, d, std=(d * cfg.d_kv) ** -0.5), "k": normal(inner, d, std=d ** -0.5),
                "v": normal(inner, d, std=d ** -0.5), "o": normal(d, inner, std=inner ** -0.5)}

    # float16 keeps the FFN output projection in float32, as transformers' _keep_in_fp32_modules = ["wo"]:
    # T5 v1.1 FFN activations exceed float16's range (the residual stream then promotes to float32).
    keep = dtype == torch.float16

    def mlp() -> dict:
        if cfg.is_gated:
            return {"wi_0": normal(d_ff, d, std=d ** -0.5), "wi_1": normal(d_ff, d, std=d ** -0.5),
                    "wo": normal(d, d_ff, std=d_ff ** -0.5, keep_fp32=keep)}
        return {"wi": normal(d_ff, d, std=d ** -0.5), "wo": normal(d, d_ff, std=d_ff ** -0.5, keep_fp32=keep)}

    def table() -> Tensor:
        return normal(cfg.relative_attention_num_buckets, cfg.num_heads, std=d ** -0.5)

    def encoder_block() -> dict:
        block = {"attn_norm": ones(d), "attn": attn(), "mlp_norm": ones(d), "mlp": mlp()}
        return {"rel_bias": table(), **block} if cfg.per_layer_position_bias else block

    def decoder_block() -> dict:
        block = {"self_attn_norm": ones(d), "self_attn": attn(), "cross_attn_norm": ones(d),
                 "cross_attn": attn(), "mlp_norm": ones(d), "mlp": mlp()}
        return {"rel_bias": table(), **block} if cfg.per_layer_position_bias else block

    params: dict[str, Any] = {"shared": normal(cfg.vocab_size, d, std=1.0)}
    for stack, make_block, depth in (("encoder", encoder_block, cfg.num_layers),
                                     ("decoder", decoder_block, cfg.num_decoder_layers)):
        tree: dict[str, Any] = {} if cfg.per_layer_position_bias else {"rel_bias": table()}
        tree["blocks"] = [make_block() for _ in range(depth)]
        tree["final_norm"] = ones(d)
        params[stack] = tree
    if not cfg.tie_word_embeddings:
        params["lm_head"] = normal(cfg.vocab_size, d, std=1.0)
    return params


# ---------------------------------------------------------------- tree helpers
def flatten_params(params: dict, prefix: str = "") -> dict[str, Tensor]:
    """``{"encoder.blocks.0.attn.q": tensor, ...}``: the dotted pytree paths, in tree order."""
    flat: dict[str, Tensor] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Tensor):
            flat[path] = node
        elif isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for index, child in enumerate(node):
                walk(child, f"{path}.{index}" if path else str(index))
        else:
            raise TypeError(f"params: leaf at {path!r} is {type(node).__name__}, not a Tensor")

    walk(params, prefix)
    return flat


def unflatten_params(flat: dict[str, Tensor]) -> dict:
    """Inverse of ``flatten_params``: digit path parts become list indices."""
    root: dict[str, Any] = {}
    for path, tensor in flat.items():
        parts = path.split(".")
        node: Any = root
        for part, following in zip(parts[:-1], parts[1:]):
            key: Any = int(part) if isinstance(node, list) else part
            if isinstance(node, list):
                while len(node) <= key:
                    node.append(None)
            child = node[key] if (isinstance(node, list) or key in node) else None
            if child is None:
                child = [] if following.isdigit() else {}
                node[key] = child
            node = child
        last: Any = parts[-1]
        if isinstance(node, list):
            last = int(last)
            while len(node) <= last:
                node.append(None)
        node[last] = tensor
    return root


def tree_map(fn: Callable[[Tensor], Tensor], params: Any) -> Any:
    """Apply ``fn`` to every tensor leaf, keeping the dict/list structure."""
    if isinstance(params, Tensor):
        return fn(params)
    if isinstance(params, dict):
        return {key: tree_map(fn, child) for key, child in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(tree_map(fn, child) for child in params)
    raise TypeError(f"params: unexpected leaf of type {type(params).__name__}")


def iter_leaves(params: Any) -> Iterator[Tensor]:
    """The tensor leaves in tree order."""
    yield from flatten_params(params).values()


def num_params(params: Any) -> int:
    """Total element count of the pytree."""
    return sum(leaf.numel() for leaf in iter_leaves(params))
