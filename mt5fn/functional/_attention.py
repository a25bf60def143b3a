"""Multi-head attention the T5 way: no 1/sqrt(d) scaling, an additive bias.

Vaswani et al. 2017 with T5's two changes (Raffel et al. 2020, sec. 2.1): the
query-key logits are not scaled (the initialisation of ``q`` absorbs it), and a
relative position bias plus the padding / causal mask are added to the logits.
The bias and the mask arrive here already summed, as one additive float tensor.

The kernel is ``scaled_dot_product_attention`` with ``scale=1.0``. A plain
softmax path serves what SDPA's CPU kernel cannot do: forward-mode AD
(``jvp``/``jacfwd``), ``vmap`` (no batching rule: it would loop), attention
dropout with an explicit generator, and a bias that needs a gradient (training:
the position-bias table is learned), where the CPU kernels fall back to a
slower "math" composite anyway. Both paths compute the same function.

Weights: ``{"q", "k", "v", "o"}``, or ``{"qkv", "o"}`` with the three input
projections fused into one ``(3 H d_kv, d)`` leaf (a decoding layout of
``mt5fn.prepare_decoding``); every leaf is read through ``linear``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ._dropout import dropout
from ._linear import linear
from ._transforms import under_batching_or_forward_ad

# (this step's keys, values) (B, H, T, d_kv) -> the keys and values to attend over (B, H, Tk, d_kv):
# how a decoding cache enters a block (it writes the new ones into its slots).
KeyValueUpdate = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# (what, tensor) -> None: receives intermediate values (``mt5fn.intermediates``); see ``attention``.
Observer = Callable[[str, Tensor], None]


def _bias_needs_grad(bias: Tensor | None) -> bool:
    """A learned bias under autograd: SDPA would take its unfused math fallback (extra scaling
    and -inf checks) to differentiate the mask; the plain path is the same math, cheaper."""
    return bias is not None and bias.requires_grad and torch.is_grad_enabled()


def split_heads(projected: Tensor, num_heads: int) -> Tensor:
    """(B, T, H * d_kv) -> (B, H, T, d_kv)."""
    return rearrange(projected, "b t (h d) -> b h t d", h=num_heads)


def project_key_value(p: dict, source: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """Keys and values of ``source`` (B, S, d): two (B, H, S, d_kv) tensors.

    Split out so a decoding cache can compute cross-attention K/V once per input.
    """
    key = split_heads(linear(source, p["k"]), num_heads)  # (B, H, S, d_kv)
    value = split_heads(linear(source, p["v"]), num_heads)  # (B, H, S, d_kv)
    return key, value


def attention_weights(query: Tensor, key: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(q k^T + bias), unscaled: (B, H, Tq, d), (B, H, Tk, d) -> (B, H, Tq, Tk)."""
    scores = query @ key.transpose(-1, -2)  # (B, H, Tq, Tk)
    if bias is not None:
        # in the queries' dtype, as the SDPA path: a half model's float32 residual stream (FFN wo kept in
        # float32) makes a float32 bias for UMT5's later blocks; transformers adds it to half scores in place
        scores = scores + bias.to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def attend(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """softmax(q k^T + bias) v, unscaled. (B, H, Tq, d), (B, H, Tk, d) x2 -> (B, H, Tq, d)."""
    if dropout_rate > 0.0 or _bias_needs_grad(bias) or under_batching_or_forward_ad():
        weights = dropout(attention_weights(query, key, bias), dropout_rate, generator)  # (B, H, Tq, Tk)
        return weights @ value  # (B, H, Tq, d)
    if bias is not None and bias.dtype != query.dtype:
        bias = bias.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)


def _project(p: dict, hidden: Tensor, key_value_states: Tensor | None,
             key_value: tuple[Tensor, Tensor] | None, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key and value (B, H, *, d_kv) from whichever weight form ``p`` holds."""
    if key_value is not None:
        return split_heads(linear(hidden, p["q"]), num_heads), *key_value
    if key_value_states is None and "qkv" in p:
        query, key, value = linear(hidden, p["qkv"]).chunk(3, dim=-1)  # 3 x (B, T, H*d_kv)
        return split_heads(query, num_heads), split_heads(key, num_heads), split_heads(value, num_heads)
    query = split_heads(linear(hidden, p["q"]), num_heads)  # (B, H, T, d_kv)
    key, value = project_key_value(p, hidden if key_value_states is None else key_value_states, num_heads)
    return query, key, value


def attention(p: dict, hidden: Tensor, key_value_states: Tensor | None = None,
              bias: Tensor | None = None, *, num_heads: int, dropout_rate: float = 0.0,
              generator: torch.Generator | None = None,
              key_value: tuple[Tensor, Tensor] | None = None,
              update_key_value: KeyValueUpdate | None = None,
              observe: Callable[[Tensor], None] | None = None) -> Tensor:
    """One attention sublayer (without its norm and residual).

    p: {"q", "k", "v": (H*d_kv, d), "o": (d, H*d_kv)} or {"qkv", "o"}; hidden: (B, T, d).
    ``key_value_states`` (B, S, d) makes it cross-attention (default: self).
    ``key_value`` passes precomputed (B, H, S, d_kv) keys and values instead.
    ``update_key_value`` receives this call's keys and values and returns the
    ones to attend over (a decoding cache: written into their slots, earlier
    ones prepended). bias: additive, broadcastable to (B, H, T, S). Returns (B, T, d).
    ``observe`` receives the attention probabilities (B, H, T, Tk) after the
    softmax, before dropout; the call then takes the plain-softmax path (the
    same function), and without it nothing changes.
    """
    query, key, value = _project(p, hidden, key_value_states, key_value, num_heads)
    if update_key_value is not None:
        key, value = update_key_value(key, value)  # (B, H, Tk, d_kv)
    if observe is not None:
        weights = attention_weights(query, key, bias)  # (B, H, T, Tk)
        observe(weights)
        context = dropout(weights, dropout_rate, generator) @ value  # (B, H, T, d_kv)
    else:
        context = attend(query, key, value, bias, dropout_rate=dropout_rate, generator=generator)
    context = rearrange(context, "b h t d -> b t (h d)")  # (B, T, H*d_kv)
    return linear(context, p["o"])  # (B, T, d)
