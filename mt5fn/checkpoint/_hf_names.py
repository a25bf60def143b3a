"""The bijection between transformers' state-dict names and the mt5fn pytree.

transformers nests each block's sublayers in ``layer.{0,1,2}`` and names
modules after Mesh TensorFlow (``SelfAttention``, ``EncDecAttention``,
``DenseReluDense``); the pytree names them after what they do. Tensors are
passed through untouched (no copies): both sides store ``[out, in]``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

from ..model._config import MT5Config
from ..model._params import flatten_params, unflatten_params

# Keys some checkpoints carry that no model uses (old T5 exports gave the first
# cross-attention a relative bias that transformers never reads).
_LEGACY_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _name_pairs(cfg: MT5Config, *, encoder_only: bool = False) -> list[tuple[str, str, tuple[int, ...]]]:
    """(hf_name, pytree_path, shape) for every parameter but the embedding and head,
    in the order ``init_params`` builds the tree (the encoder's only when ``encoder_only``)."""
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

    stacks = [("encoder", cfg.num_layers)] + ([] if encoder_only else [("decoder", cfg.num_decoder_layers)])
    for stack, depth in stacks:
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


def has_decoder_names(names: Iterable[str]) -> bool:
    """Whether transformers names include decoder weights (the embedding alias does not count)."""
    return any(name.startswith("decoder.") and name != "decoder.embed_tokens.weight" for name in names)


def has_encoder_names(names: Iterable[str]) -> bool:
    return any(name.startswith("encoder.") and name != "encoder.embed_tokens.weight" for name in names)


def match_names(shapes: Mapping[str, tuple[int, ...]], cfg: MT5Config, *, encoder_only: bool,
                where: Callable[[str], str] = lambda name: "") -> dict[str, str]:
    """``{pytree path: transformers name}`` for the tensors a model of ``cfg`` reads from ``shapes``.

    ``shapes`` maps every name of a checkpoint to its shape; nothing is read.
    ``encoder_only`` keeps ``shared`` and the encoder: decoder and head names
    are then skipped, not unexpected. Missing, unexpected and mis-shaped names
    are reported together in one ``ValueError`` (``where(name)`` may add the
    file a name came from). ``lm_head`` is included when present; whether it
    merely repeats the embedding (a tied head) needs the values and is the
    caller's to decide.
    """
    embed_shape = (cfg.vocab_size, cfg.d_model)
    plan: dict[str, str] = {}
    missing: list[str] = []
    bad_shape: list[str] = []
    used = set(_LEGACY_KEYS) | set(_EMBED_ALIASES)

    def take(hf_name: str, path: str, shape: tuple[int, ...]) -> None:
        used.add(hf_name)
        if hf_name not in shapes:
            missing.append(hf_name)
        elif tuple(shapes[hf_name]) != shape:
            bad_shape.append(f"{hf_name}: shape {tuple(shapes[hf_name])}, config expects {shape}{where(hf_name)}")
        else:
            plan[path] = hf_name

    embed_name = next((n for n in ("shared.weight", *_EMBED_ALIASES) if n in shapes), "shared.weight")
    take(embed_name, "shared", embed_shape)
    for hf_name, path, shape in _name_pairs(cfg, encoder_only=encoder_only):
        take(hf_name, path, shape)
    if "lm_head.weight" in shapes and not encoder_only:
        take("lm_head.weight", "lm_head", embed_shape)
    if encoder_only:
        used.update(name for name in shapes if name.startswith("decoder.") or name == "lm_head.weight")
    unexpected = sorted(name for name in shapes if name not in used)
    if missing or unexpected or bad_shape:
        kind = "encoder-only " if encoder_only else ""
        lines = [f"state_dict does not match the {kind}{cfg.model_type} config:"]
        lines += [f"  missing: {name}" for name in missing]
        lines += [f"  unexpected: {name}{where(name)}" for name in unexpected]
        lines += [f"  wrong shape: {entry}" for entry in bad_shape]
        raise ValueError("\n".join(lines))
    return plan


def from_hf_state_dict(state_dict: Mapping[str, Tensor], cfg: MT5Config, *, encoder_only: bool | None = None) -> dict:
    """transformers names -> pytree, reusing the given tensors (no copies).

    Accepts ``shared.weight`` or its aliases ``{encoder,decoder}.embed_tokens.weight``;
    an ``lm_head.weight`` equal to the embedding (or absent) means a tied head.
    ``encoder_only``: ``True`` keeps ``shared`` and ``encoder`` only (decoder and
    head names are skipped); ``None`` (default) does so exactly when the state
    dict holds no decoder weights, as a ``T5EncoderModel``'s does. Missing,
    unexpected and mis-shaped keys are reported together in one error.
    """
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    if encoder_only is None:
        encoder_only = not has_decoder_names(state_dict)
    elif not isinstance(encoder_only, bool):
        raise TypeError(f"encoder_only must be a bool or None, got {encoder_only!r}")
    not_tensors = [f"  {name}: not a tensor ({type(value).__name__})" for name, value in state_dict.items()
                   if not isinstance(value, Tensor)]
    not_tensors += [f"  {name}: dtype {value.dtype} (parameters are floating)" for name, value in state_dict.items()
                    if isinstance(value, Tensor) and not value.dtype.is_floating_point]
    if not_tensors:
        raise ValueError("\n".join([f"state_dict does not match the {cfg.model_type} config:", *not_tensors]))
    plan = match_names({name: tuple(t.shape) for name, t in state_dict.items()}, cfg, encoder_only=encoder_only)
    flat = {path: state_dict[name] for path, name in plan.items()}
    if "lm_head" in flat and _same_tensor(flat["lm_head"], flat["shared"]):
        del flat["lm_head"]
    return unflatten_params(flat)


def to_hf_state_dict(params: dict, cfg: MT5Config) -> dict[str, Tensor]:
    """pytree -> transformers names, sharing storage with ``params``.

    The result has every key of transformers' ``model.state_dict()``: the
    embedding aliases and, for a tied model, ``lm_head.weight`` are the same
    tensor as ``shared.weight`` (a checkpoint writer must store it once). An
    encoder-only tree (no ``"decoder"``) gives ``T5EncoderModel``'s keys.
    """
    flat = flatten_params(params)
    if "shared" not in flat:
        raise ValueError(f"params: missing 'shared' for the {cfg.model_type} config")
    encoder_only = "decoder" not in params
    state: dict[str, Tensor] = {"shared.weight": flat["shared"]}
    for alias in _EMBED_ALIASES[:1] if encoder_only else _EMBED_ALIASES:
        state[alias] = flat["shared"]
    for hf_name, path, _shape in _name_pairs(cfg, encoder_only=encoder_only):
        if path not in flat:
            raise ValueError(f"params: missing {path!r} for the {cfg.model_type} config")
        state[hf_name] = flat[path]
    if not encoder_only:
        state["lm_head.weight"] = flat.get("lm_head", flat["shared"])
    return state
