"""Incremental decoding: a preallocated key/value cache as a pytree, and one cached decoder step.

Autoregressive decoding with a K/V cache (the standard trick of Transformer
inference since Vaswani et al. 2017; T5's decoder as in Raffel et al. 2020):
each step feeds only the new token(s); the self-attention keys and values of
earlier positions are read from a buffer instead of being recomputed, and the
cross-attention keys and values are computed once from the encoder output.

``DecodeCache`` is a frozen dataclass registered with ``torch.utils._pytree``,
so ``torch.func`` transforms and ``torch.compile`` see its tensors as leaves:

    self_key, self_value    (L, B, H, max_length, d_kv)  preallocated, zeros until written
    cross_key, cross_value  (L, B, H, S, d_kv)           from the encoder output, once
    cross_bias              (B, 1, 1, S)                 encoder padding: 0 kept, finfo.min masked
    position                ()  int64                    slots written so far (a tensor: no recompiles)

A step of T tokens writes slots ``position .. position+T-1`` and attends over
all ``max_length`` slots with the unwritten ones masked, so its shapes do not
depend on the position. The relative position bias uses the queries' absolute
positions (UMT5: each block's own table). ``decode_step`` writes out of place
by default (a new cache; safe under ``vmap`` and ``grad``); ``inplace=True``
writes into the buffers and returns a cache sharing them -- the old one is
then consumed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils import _pytree

from . import _validate as check
from ._config import MT5Config
from ._decoder_weights import ParamDecoder
from ._masks import padding_bias
from .functional import attend, clamp_half, rms_norm, split_heads


@dataclasses.dataclass(frozen=True)
class DecodeCache:
    """Decoder state between steps; see the module docstring for the shapes."""

    self_key: Tensor
    self_value: Tensor
    cross_key: Tensor
    cross_value: Tensor
    cross_bias: Tensor
    position: Tensor

    @property
    def max_length(self) -> int:
        """Slots per row (the most tokens this cache can hold)."""
        return self.self_key.shape[-2]

    @property
    def batch_size(self) -> int:
        return self.self_key.shape[-4]


_pytree.register_dataclass(DecodeCache, serialized_type_name="mt5fn.DecodeCache")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def build_cache(weights: ParamDecoder, cfg: MT5Config, encoder_hidden: Tensor, encoder_mask: Tensor | None,
                max_length: int, *, repeat: int = 1) -> DecodeCache:
    """``init_cache`` without the boundary checks; each row repeated ``repeat`` times (beams)."""
    batch, length, _ = encoder_hidden.shape
    cross_key, cross_value = weights.cross_key_value(encoder_hidden)  # 2 x (L, B, H, S, d_kv)
    bias = padding_bias(encoder_mask, encoder_hidden.dtype)  # (B, 1, 1, S) | None
    if bias is None:
        bias = encoder_hidden.new_zeros(batch, 1, 1, length)
    if repeat > 1:
        cross_key = cross_key.repeat_interleave(repeat, dim=1)  # (L, B*repeat, H, S, d_kv)
        cross_value = cross_value.repeat_interleave(repeat, dim=1)
        bias = bias.repeat_interleave(repeat, dim=0)
    shape = (cfg.num_decoder_layers, batch * repeat, cfg.num_heads, max_length, cfg.d_kv)
    return DecodeCache(
        self_key=encoder_hidden.new_zeros(shape), self_value=encoder_hidden.new_zeros(shape),
        cross_key=cross_key, cross_value=cross_value, cross_bias=bias,
        position=torch.zeros((), dtype=torch.long, device=encoder_hidden.device))


def init_cache(params: dict, cfg: MT5Config, encoder_hidden: Tensor, encoder_mask: Tensor | None,
               max_length: int) -> DecodeCache:
    """An empty cache for decoding up to ``max_length`` tokens against ``encoder_hidden``.

    encoder_hidden: (B, S, d_model), e.g. ``mt5fn.encode(...)``; encoder_mask: the
    encoder's (B, S) attention mask or None. The cross-attention keys and values
    of every decoder block are computed here, once.
    """
    check.check_config(cfg)
    check.check_params(params)
    check.check_hidden("encoder_hidden", encoder_hidden, cfg)
    if encoder_mask is not None:
        check.check_mask("encoder_mask", encoder_mask, encoder_hidden[..., 0], "encoder_hidden[..., 0]")
    _check_int("max_length", max_length, 1)
    return build_cache(ParamDecoder(params, cfg), cfg, encoder_hidden, encoder_mask, max_length)


def _write(buffer: Tensor, new: Tensor, start: Tensor | int, inplace: bool) -> Tensor:
    """Put ``new`` (B, H, T, d_kv) into slots ``start .. start+T-1`` of ``buffer`` (B, H, M, d_kv)."""
    steps, slots = new.shape[-2], buffer.shape[-2]
    if inplace:
        if isinstance(start, int):
            buffer[..., start:start + steps, :].copy_(new)
        else:
            index = start + torch.arange(steps, device=buffer.device)  # (T,)
            buffer.index_copy_(-2, index, new)
        return buffer
    # Out of place and shape-static: every slot picks either its old value or one new row.
    slot = torch.arange(slots, device=buffer.device) - start  # (M,) offset of each slot from the start
    source = new.index_select(-2, slot.clamp(0, steps - 1))  # (B, H, M, d_kv)
    written = ((slot >= 0) & (slot < steps))[:, None]  # (M, 1)
    return torch.where(written, source, buffer)


def _blocks(weights: ParamDecoder, cfg: MT5Config, cache: DecodeCache, hidden: Tensor,
            self_bias: Callable[[int], Tensor], start: Tensor | int, keys_used: int,
            inplace: bool) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The decoder blocks of one cached step: hidden (B, T, d) -> (B, T, d), plus each block's K/V buffers."""
    eps = cfg.layer_norm_epsilon
    shared_bias = None if cfg.per_layer_position_bias else self_bias(0)
    new_keys, new_values = [], []
    for layer in range(cfg.num_decoder_layers):
        self_norm, cross_norm, mlp_norm = weights.norms(layer)
        normed = rms_norm(self_norm, hidden, eps)
        query, key, value = (split_heads(x, cfg.num_heads) for x in weights.self_qkv(layer, normed))  # (B, H, T, d_kv)
        keys = _write(cache.self_key[layer], key, start, inplace)  # (B, H, M, d_kv)
        values = _write(cache.self_value[layer], value, start, inplace)
        new_keys.append(keys)
        new_values.append(values)
        bias = self_bias(layer) if cfg.per_layer_position_bias else shared_bias
        context = attend(query, keys[..., :keys_used, :], values[..., :keys_used, :], bias)  # (B, H, T, d_kv)
        hidden = clamp_half(hidden + weights.self_out(layer, rearrange(context, "b h t d -> b t (h d)")))

        normed = rms_norm(cross_norm, hidden, eps)
        query = split_heads(weights.cross_query(layer, normed), cfg.num_heads)  # (B, H, T, d_kv)
        context = attend(query, cache.cross_key[layer], cache.cross_value[layer], cache.cross_bias)
        hidden = clamp_half(hidden + weights.cross_out(layer, rearrange(context, "b h t d -> b t (h d)")))

        normed = rms_norm(mlp_norm, hidden, eps)
        hidden = clamp_half(hidden + weights.ffn_out(layer, weights.ffn_inner(layer, normed)))  # (B, T, d)

    return hidden, new_keys, new_values


def run_step(weights: ParamDecoder, cfg: MT5Config, cache: DecodeCache, token_ids: Tensor, *,
             inplace: bool, position: int | None = None) -> tuple[Tensor, DecodeCache]:
    """The cached decoder step shared by ``decode_step`` and the generation loop.

    ``position``: the cache position as a Python int when the caller knows it
    (the generation loop counts steps); then only the written slots are read,
    and the step needs no mask for a single token. ``None`` reads the position
    tensor and attends over every slot (shape-static, traceable).
    """
    batch, steps = token_ids.shape
    hidden = F.embedding(token_ids, weights.embed)  # (B, T, d)
    dtype, device, eps = hidden.dtype, hidden.device, cfg.layer_norm_epsilon
    start: Tensor | int = cache.position if position is None else position
    keys_used = cache.max_length if position is None else position + steps
    if position is None or steps > 1:
        query = start + torch.arange(steps, device=device)  # (T,) absolute positions
        keep = torch.arange(keys_used, device=device)[None, :] <= query[:, None]  # (T, Tk) causal, written
        mask = torch.zeros((), dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
    else:
        mask = None  # one token at a known position sees exactly the slots written so far

    def self_bias(layer: int) -> Tensor:
        bias = weights.step_bias(layer, steps, keys_used, start).to(dtype)  # (1, H, T, Tk)
        return bias if mask is None else bias + mask

    hidden, new_keys, new_values = _blocks(weights, cfg, cache, hidden, self_bias, start, keys_used, inplace)
    hidden = rms_norm(weights.final_norm, hidden, eps)
    if cfg.scale_decoder_outputs:
        hidden = hidden * (cfg.d_model ** -0.5)
    logits = weights.head(hidden)  # (B, T, V)
    if inplace:
        next_cache = dataclasses.replace(cache, position=cache.position.add_(steps))
    else:
        next_cache = dataclasses.replace(cache, self_key=torch.stack(new_keys), self_value=torch.stack(new_values),
                                         position=cache.position + steps)
    return logits, next_cache


def _check_cache(cache: object, cfg: MT5Config) -> DecodeCache:
    if not isinstance(cache, DecodeCache):
        raise TypeError(f"cache must be a DecodeCache from mt5fn.init_cache, got {type(cache).__name__}")
    layers, heads, d_kv = cache.self_key.shape[0], cache.self_key.shape[-3], cache.self_key.shape[-1]
    if (layers, heads, d_kv) != (cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv):
        raise ValueError(f"cache has (layers, heads, d_kv) = {(layers, heads, d_kv)} but the config has "
                         f"{(cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv)}")
    return cache


def decode_step(params: dict, cfg: MT5Config, cache: DecodeCache, token_ids: Tensor, *,
                inplace: bool = False) -> tuple[Tensor, DecodeCache]:
    """Feed ``token_ids`` (B, T) after the cached ones; return their logits (B, T, V) and the next cache.

    Pure by default: the input cache is untouched and a new one is returned, so
    the function works under ``torch.func.vmap`` / ``grad`` and
    ``torch.compile`` (the position is a tensor; nothing is read back to
    Python). ``inplace=True`` writes into ``cache``'s buffers instead (the
    generation loop's fast path); the returned cache shares them.
    """
    check.check_config(cfg)
    check.check_params(params)
    _check_cache(cache, cfg)
    check.check_ids("token_ids", token_ids, cfg)
    if token_ids.shape[0] != cache.batch_size:
        raise ValueError(f"token_ids has batch size {token_ids.shape[0]} but the cache holds {cache.batch_size} rows")
    if token_ids.shape[1] > cache.max_length:
        raise ValueError(f"token_ids has {token_ids.shape[1]} tokens but the cache holds {cache.max_length} slots")
    if check.is_plain_eager(cache.position) and cache.position.device.type == "cpu":
        # A value check a transform or compiler could not do; free on the CPU (no device sync).
        used = int(cache.position)
        if used + token_ids.shape[1] > cache.max_length:
            raise ValueError(f"cache too small: it holds {cache.max_length} slots, {used} are written and "
                             f"token_ids adds {token_ids.shape[1]}")
    return run_step(ParamDecoder(params, cfg), cfg, cache, token_ids, inplace=inplace)
