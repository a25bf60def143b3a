"""Input checks at the public boundary, safe under ``vmap``, ``grad`` and ``torch.compile``.

Shape and dtype checks are static and always run. Value checks (token ids in
range) need ``bool()`` on a tensor, which a transform or a compiler cannot do,
so they run only on plain eager tensors -- the case where a bad id would
otherwise surface as an ``IndexError`` from deep inside ``embedding``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._config import MT5Config

IGNORE_INDEX = -100


def is_plain_eager(tensor: Tensor) -> bool:
    """True when ``tensor``'s values can be read: eager, not traced, not wrapped by torch.func."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.device.type == "meta":
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def check_config(cfg: Any) -> MT5Config:
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    return cfg


def check_params(params: Any) -> None:
    if not isinstance(params, dict) or "shared" not in params:
        raise TypeError("params must be the mt5fn parameter pytree (a dict with 'shared', 'encoder', "
                        f"'decoder'), got {type(params).__name__}")


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
