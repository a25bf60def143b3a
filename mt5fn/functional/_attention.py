"""Multi-head attention the T5 way: no 1/sqrt(d) scaling, an additive bias.

Vaswani et al. 2017 with T5's two changes (Raffel et al. 2020, sec. 2.1): the
query-key logits are not scaled (the initialisation of ``q`` absorbs it), and a
relative position bias plus the padding / causal mask are added to the logits.
The bias and the mask arrive here already summed, as one additive float tensor.

Weights: ``{"q", "k", "v": (H d_kv, d), "o": (d, H d_kv)}``, each read through
``kernels.linear`` / ``kernels.project`` (which also read the decoding layouts'
fused and re-laid-out forms). ``attend`` is the math; where torch's fused
kernel computes the same function, ``kernels`` runs that instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange
from torch import Tensor

from ..kernels import fused_attention, fused_attention_applies, linear, project
from ._dropout import dropout

# (this step's keys, values) (B, H, T, d_kv) -> the keys and values to attend over (B, H, Tk, d_kv):
# how a decoding cache enters a block (it writes the new ones into its slots).
KeyValueUpdate = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def split_heads(projected: Tensor, num_heads: int) -> Tensor:
    """(B, T, H * d_kv) -> (B, H, T, d_kv)."""
    return rearrange(projected, "b t (h d) -> b h t d", h=num_heads)


def project_key_value(p: dict, source: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """Keys and values of ``source`` (B, S, d): two (B, H, S, d_kv) tensors.

    Split out so a decoding cache can compute cross-attention K/V once per input.
    """
    key, value = project(p, source, "k", "v")  # 2 x (B, S, H*d_kv)
    return split_heads(key, num_heads), split_heads(value, num_heads)


def attention_weights(query: Tensor, key: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(q k^T + bias), unscaled: (B, H, Tq, d), (B, H, Tk, d) -> (B, H, Tq, Tk)."""
    scores = query @ key.transpose(-1, -2)  # (B, H, Tq, Tk)
    if bias is not None:
        # in the queries' dtype, as the fused kernel: a half model's float32 residual stream (FFN wo kept
        # in float32) makes a float32 bias for UMT5's later blocks; transformers adds it to half scores
        scores = scores + bias.to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def attend(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """softmax(q k^T + bias) v, unscaled. (B, H, Tq, d), (B, H, Tk, d) x2 -> (B, H, Tq, d)."""
    if fused_attention_applies(bias, dropout_rate):
        return fused_attention(query, key, value, bias)  # (B, H, Tq, d)
    weights = dropout(attention_weights(query, key, bias), dropout_rate, generator)  # (B, H, Tq, Tk)
    return weights @ value  # (B, H, Tq, d)


def _query_key_value(p: dict, hidden: Tensor, key_value_states: Tensor | None,
                     num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Self-attention projects all three from ``hidden``; cross-attention K and V from the encoder."""
    if key_value_states is None:
        query, key, value = project(p, hidden, "q", "k", "v")  # 3 x (B, T, H*d_kv)
        return split_heads(query, num_heads), split_heads(key, num_heads), split_heads(value, num_heads)
    return (split_heads(linear(hidden, p["q"]), num_heads),
            *project_key_value(p, key_value_states, num_heads))


def attention_probabilities(p: dict, hidden: Tensor, key_value_states: Tensor | None = None,
                            bias: Tensor | None = None, *, num_heads: int) -> Tensor:
    """The (B, H, T, S) probabilities ``attention`` weights the values with (after the softmax, before
    dropout): what ``mt5fn.intermediates`` reports as an attention map."""
    query, key, _ = _query_key_value(p, hidden, key_value_states, num_heads)
    return attention_weights(query, key, bias)


def attention(p: dict, hidden: Tensor, key_value_states: Tensor | None = None,
              bias: Tensor | None = None, *, num_heads: int, dropout_rate: float = 0.0,
              generator: torch.Generator | None = None,
              key_value: tuple[Tensor, Tensor] | None = None,
              update_key_value: KeyValueUpdate | None = None) -> Tensor:
    """One attention sublayer (without its norm and residual).

    p: {"q", "k", "v": (H*d_kv, d), "o": (d, H*d_kv)}; hidden: (B, T, d).
    ``key_value_states`` (B, S, d) makes it cross-attention (default: self).
    bias: additive, broadcastable to (B, H, T, S). Returns (B, T, d).

    Two seams let a decoding cache run this very function: ``key_value`` passes
    cross-attention keys and values (B, H, S, d_kv) computed once per input, and
    ``update_key_value`` receives this call's keys and values and returns the
    ones to attend over (written into the cache's slots, earlier ones prepended).
    """
    if key_value is not None:
        query = split_heads(linear(hidden, p["q"]), num_heads)  # (B, H, T, d_kv)
        key, value = key_value  # (B, H, S, d_kv) each
    else:
        query, key, value = _query_key_value(p, hidden, key_value_states, num_heads)
    if update_key_value is not None:
        key, value = update_key_value(key, value)  # (B, H, Tk, d_kv)
    context = attend(query, key, value, bias, dropout_rate=dropout_rate, generator=generator)  # (B, H, T, d_kv)
    context = rearrange(context, "b h t d -> b t (h d)")  # (B, T, H*d_kv)
    return linear(context, p["o"])  # (B, T, d)
