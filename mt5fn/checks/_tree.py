"""The parameter pytree against its config: every part, leaf shape, dtype and device.

Metadata only, so the check is safe under ``vmap``, ``grad`` and while
compiling. Projections may be any weight-leaf form ``kernels.linear_shape``
knows (dense, oneDNN-packed, column blocks, int8); norms and tables are dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..kernels import linear_dtype, linear_form, linear_shape

if TYPE_CHECKING:
    from ..model import MT5Config

# Weight-leaf forms that store int8 values: inference only (no backward through their products).
INT8_FORMS = ("int8", "int8-dynamic", "q8_0")
INT8_ONLY = ("int8 forms are inference-only and nothing is differentiated through them; train the float "
             "tree (mt5fn.dequantize(params, cfg) gives one; LoRA adapts float trees only) and quantize "
             "afterwards, or run this call under torch.no_grad()")

# Floating dtypes a parameter leaf may have.
PARAM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class _Dtypes:
    """What one traversal learns about the leaves: the compute dtype and device (those of ``shared``)."""

    def __init__(self, shared: Tensor, differentiates: bool = True) -> None:
        self.dtype, self.device = shared.dtype, shared.device
        self.int8: str | None = None  # the first int8-form leaf's path (int8, int8-dynamic, q8_0)
        # the call may run a backward (grad mode on and the caller not inference-only)
        self.differentiates = differentiates and torch.is_grad_enabled()

    def check(self, path: str, dtype: torch.dtype, device: torch.device, *, may_be_float32: bool = False) -> None:
        if dtype not in PARAM_DTYPES:
            raise TypeError(f"params: {path} has dtype {dtype}; parameters are floating "
                            f"({', '.join(str(d).removeprefix('torch.') for d in PARAM_DTYPES)})")
        # Half-precision models may keep each FFN output projection in float32 (transformers'
        # _keep_in_fp32_modules); every other leaf has the embedding's dtype, or a product fails.
        allowed = {self.dtype} | ({torch.float32} if may_be_float32 else set())
        if dtype not in allowed:
            raise TypeError(f"params: {path} has dtype {dtype} but the embedding 'shared' has {self.dtype}; "
                            "every leaf has one dtype (a half model may keep FFN 'wo' in float32)")
        if device != self.device:
            raise ValueError(f"params: {path} is on {device} but 'shared' is on {self.device}")


def _leaf(path: str, node: Any, shape: tuple[int, ...], seen: _Dtypes | None) -> None:
    """A norm or table: a dense tensor of exactly ``shape``."""
    if not isinstance(node, Tensor):
        raise TypeError(f"params: {path} must be a tensor of shape {shape}, got {type(node).__name__}")
    if node.layout != torch.strided:
        raise TypeError(f"params: {path} must be a dense (strided) tensor, got layout {node.layout}")
    if tuple(node.shape) != shape:
        raise ValueError(f"params: {path} has shape {tuple(node.shape)} but the config needs {shape}")
    if seen is not None:
        seen.check(path, node.dtype, node.device)


def _weight(path: str, node: Any, shape: tuple[int, int], seen: _Dtypes, *, may_be_float32: bool = False) -> None:
    """A projection: any weight-leaf form ``functional.linear`` knows, of logical shape ``shape``.

    Forms that carry their own storage dtype (quantized ones) are checked for shape only."""
    got = linear_shape(node, f"params: {path}")
    if got != shape:
        raise ValueError(f"params: {path} has (out, in) = {got} but the config needs {shape}")
    form = linear_form(node)
    if form in INT8_FORMS:
        seen.int8 = seen.int8 or path
        if seen.differentiates:
            for key, part in sorted(node.items()):
                if isinstance(part, Tensor) and part.requires_grad:
                    raise TypeError(f"params: {path} is an int8 weight leaf ({form!r} form) and its {key!r} "
                                    f"requires grad: {INT8_ONLY}")
    if form == "dense" and node.layout != torch.strided:
        raise TypeError(f"params: {path} must be a dense (strided) tensor, got layout {node.layout}")
    if form in ("dense", "onednn"):
        seen.check(path, node.dtype, node.device, may_be_float32=may_be_float32)
    elif form == "columns":
        blocks = node["columns"]
        dtypes = {block.dtype for block in blocks}
        if len(dtypes) != 1:
            raise TypeError(f"params: {path} has column blocks of several dtypes {sorted(map(str, dtypes))}")
        for index, block in enumerate(blocks):
            seen.check(f"{path}.columns.{index}", linear_dtype(node), block.device, may_be_float32=may_be_float32)
    elif isinstance(node, dict):  # a form with its own storage (int8 + scale): same device as the rest
        for key, part in sorted(node.items()):
            if isinstance(part, Tensor) and part.device != seen.device:
                raise ValueError(f"params: {path}.{key} is on {part.device} but 'shared' is on {seen.device}")


def _keys(path: str, node: Any, allowed: set[str], required: list[set[str]]) -> None:
    """``node`` is a dict with only ``allowed`` keys and one complete key set of ``required``."""
    if not isinstance(node, dict):
        raise TypeError(f"params: {path} must be a dict, got {type(node).__name__}")
    extra = sorted(set(map(str, node)) - allowed)
    if extra:
        raise ValueError(f"params: {path} has unexpected keys {extra}")
    if not any(option <= set(node) for option in required):
        missing = sorted(min(required, key=lambda option: len(option - set(node))) - set(node))
        raise ValueError(f"params: {path} is missing {missing}")


def _attention(path: str, node: Any, cfg: MT5Config, seen: _Dtypes) -> None:
    d, inner = cfg.d_model, cfg.inner_dim
    _keys(path, node, {"q", "k", "v", "o", "qkv"}, [{"q", "k", "v", "o"}, {"qkv", "o"}])
    for name in ("q", "k", "v"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (inner, d), seen)
    if "qkv" in node:
        _weight(f"{path}.qkv", node["qkv"], (3 * inner, d), seen)
    _weight(f"{path}.o", node["o"], (d, inner), seen)


def _mlp(path: str, node: Any, cfg: MT5Config, seen: _Dtypes) -> None:
    d, d_ff = cfg.d_model, cfg.d_ff
    inputs = [{"wi_0", "wi_1"}, {"wi_01"}] if cfg.is_gated else [{"wi"}]
    _keys(path, node, {"wi", "wi_0", "wi_1", "wi_01", "wo"}, [option | {"wo"} for option in inputs])
    if cfg.is_gated and "wi" in node:
        raise ValueError(f"params: {path} has 'wi' but the config's feed-forward is gated (wi_0, wi_1)")
    if not cfg.is_gated and ({"wi_0", "wi_1", "wi_01"} & set(node)):
        raise ValueError(f"params: {path} has gated weights {sorted({'wi_0', 'wi_1', 'wi_01'} & set(node))} "
                         f"but the config's feed-forward is {cfg.feed_forward_proj!r} (one 'wi')")
    for name in ("wi", "wi_0", "wi_1"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (d_ff, d), seen)
    if "wi_01" in node:
        _weight(f"{path}.wi_01", node["wi_01"], (2 * d_ff, d), seen)
    _weight(f"{path}.wo", node["wo"], (d, d_ff), seen, may_be_float32=True)


def _stack(name: str, node: Any, cfg: MT5Config, seen: _Dtypes) -> None:
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
        _leaf(f"{name}.rel_bias", node["rel_bias"], table, seen)
    _leaf(f"{name}.final_norm", node["final_norm"], (cfg.d_model,), seen)
    sublayers = (("self_attn", "cross_attn") if decoder else ("attn",))
    norms = {f"{sub}_norm" for sub in sublayers} | {"mlp_norm"}
    keys = norms | set(sublayers) | {"mlp"} | ({"rel_bias"} if cfg.per_layer_position_bias else set())
    for index, block in enumerate(blocks):
        path = f"{name}.blocks.{index}"
        _keys(path, block, keys, [keys])
        for norm in sorted(norms):
            _leaf(f"{path}.{norm}", block[norm], (cfg.d_model,), seen)
        if cfg.per_layer_position_bias:
            _leaf(f"{path}.rel_bias", block["rel_bias"], table, seen)
        for sub in sublayers:
            _attention(f"{path}.{sub}", block[sub], cfg, seen)
        _mlp(f"{path}.mlp", block["mlp"], cfg, seen)
    if decoder and "cross_kv" in node:
        _weight(f"{name}.cross_kv", node["cross_kv"], (depth * 2 * cfg.inner_dim, cfg.d_model), seen)


def check_params(params: Any, cfg: MT5Config, *, need_decoder: bool = False, differentiates: bool = True) -> None:
    """Every part, leaf shape, dtype and device of ``params`` against ``cfg`` (metadata only: safe
    under transforms and while compiling).

    Leaves are floating (``PARAM_DTYPES``), all of ``shared``'s dtype except that FFN ``wo`` may be
    float32, all on ``shared``'s device; projections may be any weight-leaf form
    ``functional.linear_shape`` accepts. ``need_decoder``: the call decodes, so an encoder-only tree
    (``shared`` and ``encoder`` only) is refused. ``differentiates=False``: the caller never runs a
    backward (``generate``, ``prepare_decoding``, ``quantize``), so int8 forms beside leaves that
    require grad are fine; otherwise, with grad mode on, they are refused (``INT8_ONLY``).
    """
    if not isinstance(params, dict):
        raise TypeError("params must be the mt5fn parameter pytree (a dict with 'shared', 'encoder', "
                        f"'decoder'), got {type(params).__name__}")
    extra = sorted(set(map(str, params)) - {"shared", "encoder", "decoder", "lm_head"})
    if extra:
        raise ValueError(f"params has unexpected top-level keys {extra}")
    missing = [key for key in ("shared", "encoder") if key not in params]
    if missing:
        raise ValueError(f"params is missing {missing} (a tree from mt5fn.init_params / load_pretrained has "
                         "'shared', 'encoder', 'decoder' and, when untied, 'lm_head')")
    _leaf("shared", params["shared"], (cfg.vocab_size, cfg.d_model), None)
    seen = _Dtypes(params["shared"], differentiates)
    seen.check("shared", params["shared"].dtype, params["shared"].device)
    _stack("encoder", params["encoder"], cfg, seen)
    if "decoder" in params:
        _stack("decoder", params["decoder"], cfg, seen)
    elif need_decoder:
        raise ValueError("params: the model has no decoder (an encoder-only tree, with 'shared' and 'encoder' "
                         "only); this function needs the decoder")
    if "lm_head" in params:
        _weight("lm_head", params["lm_head"], (cfg.vocab_size, cfg.d_model), seen)
    if seen.int8 is not None and seen.differentiates:
        tracked = next((path for path, leaf in _leaves(params) if leaf.requires_grad), None)
        if tracked is not None:
            raise TypeError(f"params: {seen.int8} is an int8 weight leaf and the call differentiates "
                            f"({tracked} requires grad), which would run a backward through it: {INT8_ONLY}")


def int8_leaf(params: Any) -> str | None:
    """The dotted path of the first int8-form weight leaf of ``params`` (any tree), or None."""
    if isinstance(params, dict) and linear_form(params) in INT8_FORMS:
        return ""
    children = params.items() if isinstance(params, dict) else enumerate(params) \
        if isinstance(params, (list, tuple)) else ()
    for key, child in children:
        found = int8_leaf(child)
        if found is not None:
            return f"{key}.{found}" if found else str(key)
    return None


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, Tensor):
        yield prefix, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, (list, tuple)):
        for index, child in enumerate(node):
            yield from _leaves(child, f"{prefix}.{index}" if prefix else str(index))


def params_dtype(params: dict) -> torch.dtype:
    """The compute dtype of a checked tree (that of ``shared``)."""
    return params["shared"].dtype


def params_device(params: dict) -> torch.device:
    return params["shared"].device
