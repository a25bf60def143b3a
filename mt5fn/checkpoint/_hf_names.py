"""The bijection between transformers' state-dict names and the mt5fn pytree.

transformers nests each block's sublayers in ``layer.{0,1,2}`` and names
modules after Mesh TensorFlow (``SelfAttention``, ``EncDecAttention``,
``DenseReluDense``); the pytree names them after what they do. Tensors are
passed through untouched (no copies): both sides store ``[out, in]``.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..model._config import MT5Config
from ..model._params import flatten_params, unflatten_params

# Keys some checkpoints carry that no model uses (old T5 exports gave the first
# cross-attention a relative bias that transformers never reads).
_LEGACY_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _name_pairs(cfg: MT5Config) -> list[tuple[str, str, tuple[int, ...]]]:
    """(hf_name, pytree_path, shape) for every parameter but the embedding and head,
    in the order ``init_params`` builds the tree."""
    d, inner, d_ff = cfg.d_model, cfg.inner_dim, cfg.d_ff
    table = (cfg.relative_attention_num_buckets, cfg.num_heads)
    pairs: list[tuple[str, str, tuple[int, ...]]] = []

    def add(hf: str, ours: str, shape: tuple[int, ...]) -> None:
        pairs.append((hf, ours, shape))

    def sublayer_attn(hf: str, module: str, ours: str) -> None:
        add(f"{hf}.layer_norm.weight", f"{ours}_norm", (d,))
        for name in ("q", "k", "v"):
            add(f"{hf}.{module}.{name}.weight", f"{ours}.{name}", (inner, d))
        add(f"{hf}.{module}.o.weight", f"{ours}.o", (d, inner))

    def sublayer_mlp(hf: str, ours: str) -> None:
        add(f"{hf}.layer_norm.weight", f"{ours}.mlp_norm", (d,))
        for name in (("wi_0", "wi_1") if cfg.is_gated else ("wi",)):
            add(f"{hf}.DenseReluDense.{name}.weight", f"{ours}.mlp.{name}", (d_ff, d))
        add(f"{hf}.DenseReluDense.wo.weight", f"{ours}.mlp.wo", (d, d_ff))

    for stack, depth in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        bias_name = "layer.0.SelfAttention.relative_attention_bias.weight"
        if not cfg.per_layer_position_bias:
            add(f"{stack}.block.0.{bias_name}", f"{stack}.rel_bias", table)
        for i in range(depth):
            hf, ours = f"{stack}.block.{i}", f"{stack}.blocks.{i}"
            if cfg.per_layer_position_bias:
                add(f"{hf}.{bias_name}", f"{ours}.rel_bias", table)
            if stack == "encoder":
                sublayer_attn(f"{hf}.layer.0", "SelfAttention", f"{ours}.attn")
                sublayer_mlp(f"{hf}.layer.1", ours)
            else:
                sublayer_attn(f"{hf}.layer.0", "SelfAttention", f"{ours}.self_attn")
                sublayer_attn(f"{hf}.layer.1", "EncDecAttention", f"{ours}.cross_attn")
                sublayer_mlp(f"{hf}.layer.2", ours)
        add(f"{stack}.final_layer_norm.weight", f"{stack}.final_norm", (d,))
    return pairs


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.device.type != "meta" and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return a.device.type != "meta" and bool(torch.equal(a, b))


def from_hf_state_dict(state_dict: Mapping[str, Tensor], cfg: MT5Config) -> dict:
    """transformers names -> pytree, reusing the given tensors (no copies).

    Accepts ``shared.weight`` or its aliases ``{encoder,decoder}.embed_tokens.weight``;
    an ``lm_head.weight`` equal to the embedding (or absent) means a tied head.
    Missing, unexpected and mis-shaped keys are reported together in one error.
    """
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    embed_shape = (cfg.vocab_size, cfg.d_model)
    flat: dict[str, Tensor] = {}
    missing: list[str] = []
    bad_shape: list[str] = []
    used = set(_LEGACY_KEYS)

    def take(hf_name: str, path: str, shape: tuple[int, ...]) -> None:
        used.add(hf_name)
        if hf_name not in state_dict:
            missing.append(hf_name)
            return
        tensor = state_dict[hf_name]
        if not isinstance(tensor, Tensor):
            bad_shape.append(f"{hf_name}: not a tensor ({type(tensor).__name__})")
        elif tuple(tensor.shape) != shape:
            bad_shape.append(f"{hf_name}: shape {tuple(tensor.shape)}, config expects {shape}")
        else:
            flat[path] = tensor

    embed_name = next((n for n in ("shared.weight", *_EMBED_ALIASES) if n in state_dict), "shared.weight")
    take(embed_name, "shared", embed_shape)
    used.update(_EMBED_ALIASES)
    for hf_name, path, shape in _name_pairs(cfg):
        take(hf_name, path, shape)
    if "lm_head.weight" in state_dict:
        head = state_dict["lm_head.weight"]
        embed = flat.get("shared")
        if not (embed is not None and isinstance(head, Tensor) and _same_tensor(head, embed)):
            take("lm_head.weight", "lm_head", embed_shape)
        used.add("lm_head.weight")
    unexpected = sorted(name for name in state_dict if name not in used)
    if missing or unexpected or bad_shape:
        lines = [f"state_dict does not match the {cfg.model_type} config:"]
        lines += [f"  missing: {name}" for name in missing]
        lines += [f"  unexpected: {name}" for name in unexpected]
        lines += [f"  wrong shape: {entry}" for entry in bad_shape]
        raise ValueError("\n".join(lines))
    return unflatten_params(flat)


def to_hf_state_dict(params: dict, cfg: MT5Config) -> dict[str, Tensor]:
    """pytree -> transformers names, sharing storage with ``params``.

    The result has every key of transformers' ``model.state_dict()``: the
    embedding aliases and, for a tied model, ``lm_head.weight`` are the same
    tensor as ``shared.weight`` (a checkpoint writer must store it once).
    """
    flat = flatten_params(params)
    state: dict[str, Tensor] = {"shared.weight": flat["shared"]}
    for alias in _EMBED_ALIASES:
        state[alias] = flat["shared"]
    for hf_name, path, _shape in _name_pairs(cfg):
        if path not in flat:
            raise ValueError(f"params: missing {path!r} for the {cfg.model_type} config")
        state[hf_name] = flat[path]
    state["lm_head.weight"] = flat.get("lm_head", flat["shared"])
    return state
