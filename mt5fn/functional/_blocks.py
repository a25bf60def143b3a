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

The blocks read three fields of a config (``BlockConfig``); ``mt5fn.MT5Config``
has them, and so may any object of the caller's.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ._attention import KeyValueUpdate, attention
from ._dropout import clamp_half, dropout
from ._ffn import feed_forward
from ._norm import rms_norm


class BlockConfig(Protocol):
    """What a block needs to know: heads, the norm's epsilon and the FFN's activation name."""

    num_heads: int
    layer_norm_epsilon: float
    activation: str


def _residual(hidden: Tensor, update: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    return clamp_half(hidden + dropout(update, rate, generator))  # (B, T, d)


def attention_sublayer(p: dict, norm: Tensor, cfg: BlockConfig, hidden: Tensor, key_value_states: Tensor | None,
                       bias: Tensor | None, *, dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                       key_value: tuple[Tensor, Tensor] | None = None,
                       update_key_value: KeyValueUpdate | None = None) -> Tensor:
    """``x + Attn(norm(x))``: p the attention's weights, norm its RMSNorm weight (d,). (B, T, d) -> (B, T, d)."""
    normed = rms_norm(norm, hidden, cfg.layer_norm_epsilon)  # (B, T, d)
    update = attention(p, normed, key_value_states, bias, num_heads=cfg.num_heads, dropout_rate=dropout_rate,
                       generator=generator, key_value=key_value, update_key_value=update_key_value)
    return _residual(hidden, update, dropout_rate, generator)


def feed_forward_sublayer(p: dict, cfg: BlockConfig, hidden: Tensor, *, dropout_rate: float = 0.0,
                          generator: torch.Generator | None = None) -> Tensor:
    """``x + FFN(norm(x))`` with the block's ``mlp_norm`` and ``mlp``. (B, T, d) -> (B, T, d)."""
    normed = rms_norm(p["mlp_norm"], hidden, cfg.layer_norm_epsilon)  # (B, T, d)
    update = feed_forward(p["mlp"], normed, activation=cfg.activation, dropout_rate=dropout_rate,
                          generator=generator)
    return _residual(hidden, update, dropout_rate, generator)


def encoder_block(p: dict, cfg: BlockConfig, hidden: Tensor, bias: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """hidden: (B, T, d); bias: additive, broadcastable to (B, H, T, T). Returns (B, T, d)."""
    hidden = attention_sublayer(p["attn"], p["attn_norm"], cfg, hidden, None, bias,
                                dropout_rate=dropout_rate, generator=generator)
    return feed_forward_sublayer(p, cfg, hidden, dropout_rate=dropout_rate, generator=generator)


def decoder_block(p: dict, cfg: BlockConfig, hidden: Tensor, self_bias: Tensor | None,
                  encoder_hidden: Tensor | None, cross_bias: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                  self_key_value_update: KeyValueUpdate | None = None,
                  cross_key_value: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """hidden: (B, T, d); encoder_hidden: (B, S, d); self_bias: (.., H, T, Tk);
    cross_bias: mask only, broadcastable to (B, H, T, S). Returns (B, T, d).

    Teacher forcing: ``Tk == T`` and the keys are projected here. Cached
    decoding: ``self_key_value_update(keys, values)`` stores this step's
    (B, H, T, d_kv) keys and values and returns the (B, H, Tk, d_kv) ones to
    attend over; ``cross_key_value`` supplies the encoder's (B, H, S, d_kv)
    keys and values (then ``encoder_hidden`` may be None).
    """
    rate = dropout_rate
    hidden = attention_sublayer(p["self_attn"], p["self_attn_norm"], cfg, hidden, None, self_bias,
                                dropout_rate=rate, generator=generator, update_key_value=self_key_value_update)
    hidden = attention_sublayer(p["cross_attn"], p["cross_attn_norm"], cfg, hidden, encoder_hidden, cross_bias,
                                dropout_rate=rate, generator=generator, key_value=cross_key_value)
    return feed_forward_sublayer(p, cfg, hidden, dropout_rate=rate, generator=generator)
