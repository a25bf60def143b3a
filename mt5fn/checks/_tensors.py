"""Tensor arguments at the public boundary: token ids, masks, encoder outputs, generators, caches.

Shape, dtype and device checks read only tensor metadata and always run.
Value checks (token ids in range) need ``bool()`` on a tensor, which a
transform or a compiler cannot do, so they run only on plain eager tensors --
the case where a bad id would otherwise surface as an ``IndexError`` from deep
inside ``embedding``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..kernels import IGNORE_INDEX, is_plain_eager
from ._tree import params_device, params_dtype

if TYPE_CHECKING:
    from ..model import MT5Config

# Token ids are int64 (torch's default) or int32 (what ``embedding`` also accepts). Other integer dtypes
# are refused rather than cast: a uint8 or int16 id tensor is almost always a mistake (a byte buffer, a
# mask), not a batch of tokens.
ID_DTYPES = (torch.int64, torch.int32)


def check_ids(name: str, ids: Any, cfg: MT5Config, *, allow_ignore: bool = False, min_batch: int = 0,
              device: torch.device | None = None) -> Tensor:
    """Token ids: an int64 / int32 (B, T) tensor, T >= 1, values in ``[0, vocab_size)`` (or -100 for labels).

    ``min_batch``: the fewest rows the call can take (``generate`` needs one); ``device``: where the
    parameters are (the ids must be there too).
    """
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in ID_DTYPES:
        kind = "integer token ids" if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool \
            else "token ids as int64 or int32"
        raise TypeError(f"{name} must hold {kind}, got dtype {ids.dtype}")
    if ids.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {ids.layout}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one token per row, got shape {tuple(ids.shape)}")
    if ids.shape[0] < min_batch:
        raise ValueError(f"{name} must hold at least one row (an empty batch has nothing to decode), "
                         f"got shape {tuple(ids.shape)}")
    if device is not None and ids.device != device:
        raise ValueError(f"{name} is on {ids.device} but the parameters are on {device}")
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
    """A (B, T) mask matching its ids, on their device; nonzero keeps a position."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype.is_complex:
        raise TypeError(f"{name} must be bool, integer or float, got dtype {mask.dtype}")
    if mask.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {mask.layout}")
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} must have the shape of {ids_name} {tuple(ids.shape)}, "
                         f"got shape {tuple(mask.shape)}")
    if mask.device != ids.device:
        raise ValueError(f"{name} is on {mask.device} but {ids_name} is on {ids.device}")
    return mask


def check_same_batch(name: str, ids: Tensor, other: Tensor, other_name: str) -> None:
    if ids.shape[0] != other.shape[0]:
        raise ValueError(f"{name} has batch size {ids.shape[0]} but {other_name} has {other.shape[0]}")


def check_hidden(name: str, hidden: Any, cfg: MT5Config, params: dict | None = None) -> Tensor:
    """Encoder output: a (B, S, d_model) floating tensor, S >= 1; with ``params``, of their dtype and device."""
    if not isinstance(hidden, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(hidden).__name__}")
    if not hidden.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor (the encoder output), got dtype {hidden.dtype}")
    if hidden.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {hidden.layout}")
    if hidden.dim() != 3 or hidden.shape[-1] != cfg.d_model:
        raise ValueError(f"{name} must have shape (batch, length, d_model={cfg.d_model}), "
                         f"got shape {tuple(hidden.shape)}")
    if hidden.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one position per row, got shape {tuple(hidden.shape)}")
    if params is not None:
        if hidden.dtype != params_dtype(params):
            raise TypeError(f"{name} has dtype {hidden.dtype} but the parameters have {params_dtype(params)}")
        if hidden.device != params_device(params):
            raise ValueError(f"{name} is on {hidden.device} but the parameters are on {params_device(params)}")
    return hidden


def check_generator(generator: Any, device: torch.device | None = None) -> torch.Generator | None:
    """None or a ``torch.Generator`` (on ``device``'s type, where sampling draws)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if device is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but decoding runs on {device}")
    return generator


def check_cache_tensors(cache: Any, cfg: MT5Config, params: dict) -> None:
    """The tensors of a decoding cache (``decoding.DecodeCache``) against the config and the parameters:
    self K/V (L, B, H, M, d_kv), cross K/V (L, B, H, S, d_kv), cross_bias (B, 1, 1, S), a 0-d integer
    position; K/V and bias in the parameters' dtype and on their device."""
    fields = ("self_key", "self_value", "cross_key", "cross_value", "cross_bias", "position")
    for field in fields:
        if not isinstance(getattr(cache, field, None), Tensor):
            raise TypeError(f"cache.{field} must be a tensor, got {type(getattr(cache, field, None)).__name__}; "
                            "make caches with mt5fn.init_cache")
    self_key, cross_key = cache.self_key, cache.cross_key
    expected = (cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv)
    for field in fields[:4]:
        tensor = getattr(cache, field)
        if tensor.dim() != 5:
            raise ValueError(f"cache.{field} must have shape (layers, batch, heads, length, d_kv), "
                             f"got shape {tuple(tensor.shape)}")
        got = (tensor.shape[0], tensor.shape[2], tensor.shape[4])
        if got != expected:
            raise ValueError(f"cache has (layers, heads, d_kv) = {got} but the config has {expected}")
    if cache.self_value.shape != self_key.shape:
        raise ValueError(f"cache.self_value has shape {tuple(cache.self_value.shape)} but cache.self_key has "
                         f"{tuple(self_key.shape)}")
    if cache.cross_value.shape != cross_key.shape or cross_key.shape[1] != self_key.shape[1]:
        raise ValueError(f"cache.cross_key / cross_value have shapes {tuple(cross_key.shape)} / "
                         f"{tuple(cache.cross_value.shape)}, not (layers, {self_key.shape[1]}, heads, S, d_kv)")
    bias_shape = (self_key.shape[1], 1, 1, cross_key.shape[3])
    if tuple(cache.cross_bias.shape) != bias_shape:
        raise ValueError(f"cache.cross_bias must have shape {bias_shape}, got {tuple(cache.cross_bias.shape)}")
    if cache.position.dim() != 0 or cache.position.dtype not in ID_DTYPES:
        raise ValueError(f"cache.position must be a 0-d int64 tensor, got shape {tuple(cache.position.shape)} "
                         f"dtype {cache.position.dtype}")
    dtype, device = params_dtype(params), params_device(params)
    for field in fields:
        tensor = getattr(cache, field)
        if field != "position" and tensor.dtype != dtype:
            raise TypeError(f"cache.{field} has dtype {tensor.dtype} but the parameters have {dtype}")
        if tensor.device != device:
            raise ValueError(f"cache.{field} is on {tensor.device} but the parameters are on {device}")
