"""Input checks at the public boundary, safe under ``vmap``, ``grad`` and ``torch.compile``.

Shape and dtype checks are static and always run. Value checks (token ids in
range) need ``bool()`` on a tensor, which a transform or a compiler cannot do,
so they run only on plain eager tensors -- the case where a bad id would
otherwise surface as an ``IndexError`` from deep inside ``embedding``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..functional import IGNORE_INDEX
from ..functional import linear_shape
from ..functional._transforms import is_plain_eager
from ._config import MT5Config


def check_config(cfg: Any) -> MT5Config:
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    return cfg


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An ``int`` (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return value


def check_optional_int(name: str, value: Any, minimum: int) -> int | None:
    return None if value is None else check_int(name, value, minimum)


def check_real(name: str, value: Any) -> float:
    """A finite real number (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def check_rows(rows: Any) -> int | None:
    """The ``rows`` hint of ``prepare_decoding``: None or an int >= 1."""
    return check_optional_int("rows", rows, 1)


# ------------------------------------------------------------------ the parameter pytree
def _leaf(path: str, node: Any, shape: tuple[int, ...]) -> None:
    """A norm or table: a tensor of exactly ``shape``."""
    if not isinstance(node, Tensor):
        raise ValueError(f"params: {path} must be a tensor of shape {shape}, got {type(node).__name__}")
    if tuple(node.shape) != shape:
        raise ValueError(f"params: {path} has shape {tuple(node.shape)} but the config needs {shape}")


def _weight(path: str, node: Any, shape: tuple[int, int]) -> None:
    """A projection: any weight-leaf form ``functional.linear`` knows, of logical shape ``shape``."""
    got = linear_shape(node, f"params: {path}")
    if got != shape:
        raise ValueError(f"params: {path} has (out, in) = {got} but the config needs {shape}")


def _keys(path: str, node: Any, allowed: set[str], required: list[set[str]]) -> None:
    """``node`` is a dict with only ``allowed`` keys and one complete key set of ``required``."""
    if not isinstance(node, dict):
        raise ValueError(f"params: {path} must be a dict, got {type(node).__name__}")
    extra = sorted(set(map(str, node)) - allowed)
    if extra:
        raise ValueError(f"params: {path} has unexpected keys {extra}")
    if not any(option <= set(node) for option in required):
        missing = sorted(min(required, key=lambda option: len(option - set(node))) - set(node))
        raise ValueError(f"params: {path} is missing {missing}")


def _attention(path: str, node: Any, cfg: MT5Config) -> None:
    d, inner = cfg.d_model, cfg.inner_dim
    _keys(path, node, {"q", "k", "v", "o", "qkv"}, [{"q", "k", "v", "o"}, {"qkv", "o"}])
    for name in ("q", "k", "v"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (inner, d))
    if "qkv" in node:
        _weight(f"{path}.qkv", node["qkv"], (3 * inner, d))
    _weight(f"{path}.o", node["o"], (d, inner))


def _mlp(path: str, node: Any, cfg: MT5Config) -> None:
    d, d_ff = cfg.d_model, cfg.d_ff
    inputs = [{"wi_0", "wi_1"}, {"wi_01"}] if cfg.is_gated else [{"wi"}]
    _keys(path, node, {"wi", "wi_0", "wi_1", "wi_01", "wo"}, [option | {"wo"} for option in inputs])
    if cfg.is_gated and "wi" in node:
        raise ValueError(f"params: {path} has 'wi' but the config's feed-forward is gated (wi_0, wi_1)")
    for name in ("wi", "wi_0", "wi_1"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (d_ff, d))
    if "wi_01" in node:
        _weight(f"{path}.wi_01", node["wi_01"], (2 * d_ff, d))
    _weight(f"{path}.wo", node["wo"], (d, d_ff))


def _stack(name: str, node: Any, cfg: MT5Config) -> None:
    decoder = name == "decoder"
    depth = cfg.num_decoder_layers if decoder else cfg.num_layers
    table = (cfg.relative_attention_num_buckets, cfg.num_heads)
    top = {"blocks", "final_norm"} | (set() if cfg.per_layer_position_bias else {"rel_bias"})
    _keys(name, node, top | ({"cross_kv"} if decoder else set()), [top])
    blocks = node["blocks"]
    if not isinstance(blocks, list) or len(blocks) != depth:
        got = f"{len(blocks)} blocks" if isinstance(blocks, list) else type(blocks).__name__
        raise ValueError(f"params: {name}.blocks must be a list of {depth} blocks (the config's depth), got {got}")
    if not cfg.per_layer_position_bias:
        _leaf(f"{name}.rel_bias", node["rel_bias"], table)
    _leaf(f"{name}.final_norm", node["final_norm"], (cfg.d_model,))
    sublayers = (("self_attn", "cross_attn") if decoder else ("attn",))
    norms = {f"{sub}_norm" for sub in sublayers} | {"mlp_norm"}
    keys = norms | set(sublayers) | {"mlp"} | ({"rel_bias"} if cfg.per_layer_position_bias else set())
    for index, block in enumerate(blocks):
        path = f"{name}.blocks.{index}"
        _keys(path, block, keys, [keys])
        for norm in sorted(norms):
            _leaf(f"{path}.{norm}", block[norm], (cfg.d_model,))
        if cfg.per_layer_position_bias:
            _leaf(f"{path}.rel_bias", block["rel_bias"], table)
        for sub in sublayers:
            _attention(f"{path}.{sub}", block[sub], cfg)
        _mlp(f"{path}.mlp", block["mlp"], cfg)
    if decoder and "cross_kv" in node:
        _weight(f"{name}.cross_kv", node["cross_kv"], (depth * 2 * cfg.inner_dim, cfg.d_model))


def check_params(params: Any, cfg: MT5Config, *, need_decoder: bool = False) -> None:
    """Every part and leaf shape of ``params`` against ``cfg`` (shapes only: safe under transforms).

    ``need_decoder``: the call decodes, so an encoder-only tree is refused.
    """
    if not isinstance(params, dict) or "shared" not in params:
        raise TypeError("params must be the mt5fn parameter pytree (a dict with 'shared', 'encoder', "
                        f"'decoder'), got {type(params).__name__}")
    extra = sorted(set(map(str, params)) - {"shared", "encoder", "decoder", "lm_head"})
    if extra:
        raise ValueError(f"params has unexpected top-level keys {extra}")
    if "encoder" not in params:
        raise ValueError("params is missing 'encoder'")
    _leaf("shared", params["shared"], (cfg.vocab_size, cfg.d_model))
    _stack("encoder", params["encoder"], cfg)
    if "decoder" in params:
        _stack("decoder", params["decoder"], cfg)
    elif need_decoder:
        raise ValueError("params: the model has no decoder (an encoder-only tree, with 'shared' and 'encoder' "
                         "only); this function needs the decoder")
    if "lm_head" in params:
        _weight("lm_head", params["lm_head"], (cfg.vocab_size, cfg.d_model))


def check_ids(name: str, ids: Any, cfg: MT5Config, *, allow_ignore: bool = False) -> Tensor:
    """Token ids: an integer (B, T) tensor with values in ``[0, vocab_size)`` (or -100 for labels)."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one token per row, got shape {tuple(ids.shape)}")
    if is_plain_eager(ids) and ids.numel():
        valid = (ids >= 0) & (ids < cfg.vocab_size)
        if allow_ignore:
            valid |= ids == IGNORE_INDEX
        if not bool(valid.all()):
            bad = int(ids[~valid][0])
            extra = f" (or {IGNORE_INDEX} to ignore)" if allow_ignore else ""
            raise ValueError(f"{name} must lie in [0, vocab_size={cfg.vocab_size}){extra}, got value {bad}")
    return ids


def check_mask(name: str, mask: Any, ids: Tensor, ids_name: str) -> Tensor | None:
    """A (B, T) mask matching its ids; nonzero keeps a position."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype.is_complex:
        raise TypeError(f"{name} must be bool, integer or float, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} must have the shape of {ids_name} {tuple(ids.shape)}, "
                         f"got shape {tuple(mask.shape)}")
    return mask


def check_same_batch(name: str, ids: Tensor, other: Tensor, other_name: str) -> None:
    if ids.shape[0] != other.shape[0]:
        raise ValueError(f"{name} has batch size {ids.shape[0]} but {other_name} has {other.shape[0]}")


def check_dropout(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate must be a float in [0, 1), got {rate!r}")
    return float(rate)


def check_hidden(name: str, hidden: Any, cfg: MT5Config) -> Tensor:
    if not isinstance(hidden, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(hidden).__name__}")
    if hidden.dim() != 3 or hidden.shape[-1] != cfg.d_model:
        raise ValueError(f"{name} must have shape (batch, length, d_model={cfg.d_model}), "
                         f"got shape {tuple(hidden.shape)}")
    return hidden
