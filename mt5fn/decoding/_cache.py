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

A step runs ``functional.decoder_block`` -- the block teacher forcing runs --
with the cache entering as its ``self_key_value_update`` (write the new K/V
into slots ``position .. position+T-1``, attend over all ``max_length``
slots with the unwritten ones masked, so shapes do not depend on the
position) and its ``cross_key_value``. The relative position bias uses the
queries' absolute positions (UMT5: each block's own table). ``decode_step``
writes out of place by default (a new cache; safe under ``vmap`` and
``grad``); ``inplace=True`` writes into the buffers and returns a cache
sharing them -- the old one is then consumed.
"""

from __future__ import annotations

import dataclasses

import torch
from einops import rearrange
from torch import Tensor
from torch.utils import _pytree

from ..kernels import linear
from .. import checks as check
from ..checks import preflight
from ..functional import decoder_block, padding_bias, position_bias, project_key_value
from ..model import MT5Config, check_config, embed, lm_logits, run_stack


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


def _tables(params: dict, cfg: MT5Config) -> list[Tensor]:
    """Decoder relative-position tables, one per block (UMT5) or block 0's shared one."""
    stack = params["decoder"]
    if cfg.per_layer_position_bias:
        return [block["rel_bias"] for block in stack["blocks"]]
    return [stack["rel_bias"]]


def cross_key_value(params: dict, cfg: MT5Config, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
    """Every decoder block's cross-attention keys and values: two (L, B, H, S, d_kv)."""
    decoder = params["decoder"]
    if "cross_kv" in decoder:  # prepared: all blocks' K and V in one product
        batch, length, _ = encoder_hidden.shape
        projected = linear(encoder_hidden, decoder["cross_kv"])  # (B, S, L * 2 * H * d_kv)
        projected = rearrange(projected, "b s (l two h d) -> two l b h s d", l=cfg.num_decoder_layers, two=2,
                              h=cfg.num_heads)  # (2, L, B, H, S, d_kv)
        return projected[0].contiguous(), projected[1].contiguous()
    pairs = [project_key_value(block["cross_attn"], encoder_hidden, cfg.num_heads) for block in decoder["blocks"]]
    return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])


def build_cache(params: dict, cfg: MT5Config, encoder_hidden: Tensor, encoder_mask: Tensor | None,
                max_length: int, *, repeat: int = 1) -> DecodeCache:
    """``init_cache`` without the boundary checks; each row repeated ``repeat`` times (beams)."""
    batch, length, _ = encoder_hidden.shape
    cross_key, cross_value = cross_key_value(params, cfg, encoder_hidden)  # 2 x (L, B, H, S, d_kv)
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
    check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    check.check_hidden("encoder_hidden", encoder_hidden, cfg, params)
    if encoder_mask is not None:
        check.check_mask("encoder_mask", encoder_mask, encoder_hidden[..., 0], "encoder_hidden[..., 0]")
    check.check_int("max_length", max_length, 1)
    preflight.check_cache(params, cfg, encoder_hidden.shape[0], encoder_hidden.shape[1], max_length)
    return build_cache(params, cfg, encoder_hidden, encoder_mask, max_length)


def _write(buffer: Tensor, layer: int, new: Tensor, start: Tensor | int, inplace: bool) -> Tensor:
    """Put ``new`` (B, H, T, d_kv) into slots ``start .. start+T-1`` of block ``layer`` of ``buffer``
    (L, B, H, M, d_kv); returns that block's (B, H, M, d_kv)."""
    steps, slots = new.shape[-2], buffer.shape[-2]
    if inplace:
        if isinstance(start, int):
            buffer[layer, ..., start:start + steps, :].copy_(new)
        else:
            # Into the whole buffer, not a view of it: under a compiler a write through a view of a graph
            # input becomes a copy of the whole buffer (0.28 against 0.03 ms a step, 8 blocks, 1 thread).
            device = buffer.device
            rows = torch.arange(new.shape[0], device=device)[:, None, None]  # (B, 1, 1)
            heads = torch.arange(new.shape[1], device=device)[None, :, None]  # (1, H, 1)
            index = (start + torch.arange(steps, device=device))[None, None, :]  # (1, 1, T)
            buffer.index_put_((torch.tensor(layer, device=device), rows, heads, index), new)
        return buffer[layer]
    # Out of place and shape-static: every slot picks either its old value or one new row.
    old = buffer[layer]  # (B, H, M, d_kv)
    slot = torch.arange(slots, device=buffer.device) - start  # (M,) offset of each slot from the start
    source = new.index_select(-2, slot.clamp(0, steps - 1))  # (B, H, M, d_kv)
    written = ((slot >= 0) & (slot < steps))[:, None]  # (M, 1)
    return torch.where(written, source, old)


def distance_bias(params: dict, cfg: MT5Config, max_length: int) -> list[Tensor]:
    """Causal position bias per distance for each decoder table, stored reversed: (1, H, 1, M) each.

    Column j holds distance ``M-1-j``, so the keys 0..p of a query at position
    p read the contiguous slice ``[M-1-p, M)``: a one-token step at a known
    position slices a view instead of recomputing buckets. The generation loop
    makes it once per call.
    """
    return [position_bias(table, 1, max_length, bidirectional=False,
                          max_distance=cfg.relative_attention_max_distance, query_offset=max_length - 1)
            for table in _tables(params, cfg)]


def step_hidden(params: dict, cfg: MT5Config, cache: DecodeCache, token_ids: Tensor, *, inplace: bool,
                position: int | None = None, distances: list[Tensor] | None = None
                ) -> tuple[Tensor, DecodeCache]:
    """The cached decoder step shared by ``decode_step`` and the generation loop, up to the final norm.

    Runs the model's own decoder stack (``model.run_stack``) with the cache
    entering each block as its self-attention K/V update and its precomputed
    cross-attention K/V. Returns the decoder output (B, T, d) and the next
    cache. ``position``: the cache position as a Python int when the caller
    knows it (the generation loop counts steps); then only the written slots
    are read, and a single token needs no mask. ``None`` reads the position
    tensor and attends over every slot (shape-static, traceable).
    ``distances``: ``distance_bias`` of this call, for one-token steps at a
    known position.
    """
    steps = token_ids.shape[1]
    hidden = embed(params, token_ids)  # (B, T, d)
    dtype, device = hidden.dtype, hidden.device
    start: Tensor | int = cache.position if position is None else position
    keys_used = cache.max_length if position is None else position + steps
    one_known = position is not None and steps == 1
    if one_known:
        mask = None  # one token at a known position sees exactly the slots written so far
    else:
        query = start + torch.arange(steps, device=device)  # (T,) absolute positions
        keep = torch.arange(keys_used, device=device)[None, :] <= query[:, None]  # (T, Tk) causal, written
        mask = torch.zeros((), dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)

    def bias_of(layer: int, table: Tensor) -> Tensor:
        if one_known and distances is not None:
            reversed_distances = distances[layer]  # (1, H, 1, M), distance M-1-j in column j
            return reversed_distances[..., reversed_distances.shape[-1] - keys_used:].to(dtype)  # (1, H, 1, Tk)
        bias = position_bias(table, steps, keys_used, bidirectional=False,
                             max_distance=cfg.relative_attention_max_distance, query_offset=start).to(dtype)
        return bias if mask is None else bias + mask  # (1, H, T, Tk)

    new_keys, new_values = [], []

    def block(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
        def update(key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
            keys = _write(cache.self_key, layer, key, start, inplace)  # (B, H, M, d_kv)
            values = _write(cache.self_value, layer, value, start, inplace)
            new_keys.append(keys)
            new_values.append(values)
            return keys[..., :keys_used, :], values[..., :keys_used, :]

        return decoder_block(p, cfg, hidden, bias, None, cache.cross_bias, self_key_value_update=update,
                             cross_key_value=(cache.cross_key[layer], cache.cross_value[layer]))

    hidden = run_stack(params["decoder"], cfg, hidden, bias_of, block)  # (B, T, d)
    if inplace:
        next_cache = dataclasses.replace(cache, position=cache.position.add_(steps))
    else:
        next_cache = dataclasses.replace(cache, self_key=torch.stack(new_keys), self_value=torch.stack(new_values),
                                         position=cache.position + steps)
    return hidden, next_cache


def _check_cache(cache: object, cfg: MT5Config, params: dict) -> DecodeCache:
    if not isinstance(cache, DecodeCache):
        raise TypeError(f"cache must be a DecodeCache from mt5fn.init_cache, got {type(cache).__name__}")
    check.check_cache_tensors(cache, cfg, params)
    return cache


def decode_step(params: dict, cfg: MT5Config, cache: DecodeCache, token_ids: Tensor, *,
                inplace: bool = False) -> tuple[Tensor, DecodeCache]:
    """Feed ``token_ids`` (B, T) after the cached ones; return their logits (B, T, V) and the next cache.

    Pure by default: the input cache is untouched and a new one is returned, so
    the function works under ``torch.func.vmap`` / ``grad`` and
    ``torch.compile`` (the position is a tensor; nothing is read back to
    Python). ``inplace=True`` writes into ``cache``'s buffers instead (the
    generation loop's fast path); the returned cache shares them. ``params``
    may be a ``prepare_decoding`` tree.
    """

    check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    _check_cache(cache, cfg, params)
    check.check_ids("token_ids", token_ids, cfg, device=check.params_device(params))
    check.check_bool("inplace", inplace)
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
    preflight.check_step(params, cfg, cache.batch_size, token_ids.shape[1], cache.max_length, inplace)
    hidden, next_cache = step_hidden(params, cfg, cache, token_ids, inplace=inplace)
    return lm_logits(params, cfg, hidden), next_cache
