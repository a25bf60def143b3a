"""Encoder and decoder blocks: pre-norm residual sublayers (Raffel et al. 2020, sec. 2.1).

encoder block:  x + Attn(norm(x)),  then  x + FFN(norm(x))
decoder block:  x + SelfAttn(norm(x)),  x + CrossAttn(norm(x), enc),  x + FFN(norm(x))

Biases arrive precomputed (position bias + mask, summed) because T5 computes
them once per stack, in block 0, and every block reuses them (UMT5: one per
block, computed by the caller from the block's own table).

The decoder block is the only one there is: teacher forcing calls it on the
whole target, and a cached decoding step (``mt5fn.decode_step``, ``generate``)
calls it on the new tokens with the cache entering as two arguments -- a
``self_key_value_update`` that writes the new self-attention keys and values
into the cache's slots and returns what to attend over, and the
``cross_key_value`` computed once from the encoder output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._attention import KeyValueUpdate, Observer, attention
from ._dropout import clamp_half, dropout
from ._ffn import feed_forward
from ._norm import rms_norm

if TYPE_CHECKING:  # functional is the lowest room: the config is only a type here
    from ..model import MT5Config


def _ffn_sublayer(p: dict, cfg: MT5Config, hidden: Tensor, rate: float,
                  generator: torch.Generator | None) -> Tensor:
    normed = rms_norm(p["mlp_norm"], hidden, cfg.layer_norm_epsilon)
    update = feed_forward(p["mlp"], normed, activation=cfg.activation, dropout_rate=rate, generator=generator)
    return clamp_half(hidden + dropout(update, rate, generator))


def _seen(observe: Observer | None, what: str):
    """``observe`` narrowed to one attention's probabilities (None stays None: no cost)."""
    return None if observe is None else (lambda weights: observe(what, weights))


def encoder_block(p: dict, cfg: MT5Config, hidden: Tensor, bias: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                  observe: Observer | None = None) -> Tensor:
    """hidden: (B, T, d); bias: additive, broadcastable to (B, H, T, T). Returns (B, T, d).

    ``observe("self_attention", probabilities)`` is called with the (B, H, T, T)
    attention probabilities when given (``mt5fn.intermediates``)."""
    rate = dropout_rate
    normed = rms_norm(p["attn_norm"], hidden, cfg.layer_norm_epsilon)
    update = attention(p["attn"], normed, bias=bias, num_heads=cfg.num_heads,
                       dropout_rate=rate, generator=generator, observe=_seen(observe, "self_attention"))
    hidden = clamp_half(hidden + dropout(update, rate, generator))
    return _ffn_sublayer(p, cfg, hidden, rate, generator)


def decoder_block(p: dict, cfg: MT5Config, hidden: Tensor, self_bias: Tensor | None,
                  encoder_hidden: Tensor | None, cross_bias: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                  self_key_value_update: KeyValueUpdate | None = None,
                  cross_key_value: tuple[Tensor, Tensor] | None = None,
                  observe: Observer | None = None) -> Tensor:
    """hidden: (B, T, d); encoder_hidden: (B, S, d); self_bias: (.., H, T, Tk);
    cross_bias: mask only, broadcastable to (B, H, T, S). Returns (B, T, d).

    Teacher forcing: ``Tk == T`` and the keys are projected here. Cached
    decoding: ``self_key_value_update(keys, values)`` stores this step's
    (B, H, T, d_kv) keys and values and returns the (B, H, Tk, d_kv) ones to
    attend over; ``cross_key_value`` supplies the encoder's (B, H, S, d_kv)
    keys and values (then ``encoder_hidden`` may be None). ``observe`` receives
    ``("self_attention", (B, H, T, Tk))`` and ``("cross_attention", (B, H, T, S))``
    probabilities when given.
    """
    rate = dropout_rate
    normed = rms_norm(p["self_attn_norm"], hidden, cfg.layer_norm_epsilon)
    update = attention(p["self_attn"], normed, bias=self_bias, num_heads=cfg.num_heads,
                       dropout_rate=rate, generator=generator, update_key_value=self_key_value_update,
                       observe=_seen(observe, "self_attention"))
    hidden = clamp_half(hidden + dropout(update, rate, generator))
    normed = rms_norm(p["cross_attn_norm"], hidden, cfg.layer_norm_epsilon)
    update = attention(p["cross_attn"], normed, encoder_hidden, bias=cross_bias, num_heads=cfg.num_heads,
                       dropout_rate=rate, generator=generator, key_value=cross_key_value,
                       observe=_seen(observe, "cross_attention"))
    hidden = clamp_half(hidden + dropout(update, rate, generator))
    return _ffn_sublayer(p, cfg, hidden, rate, generator)
