"""The T5 family -- T5, mT5, UMT5 -- in one readable file: mt5fn's reference implementation.

What this file is
-----------------
The oracle. Every fast path in mt5fn (fused and re-laid-out weights, int8 leaves, the in-place
decoding cache, the compiled step, generate) is proven equal to the functions below by the
specification's equality family (``spec/``). It is also the learner's first read: the whole model,
from the norm to greedy decoding, in plain PyTorch, with nothing else in the way -- one weight form
(dense ``(out, in)`` tensors), no validation, no dropout, no kernel choice, no thread policy.

It equals transformers' ``{T5,MT5,UMT5}ForConditionalGeneration`` (eager attention) in float32 to
round-off and keeps its dtype rules for bfloat16 and float16 (float32 norm statistics, the float16
clamp, an FFN ``wo`` kept in float32). It imports only ``torch`` and ``einops``: copy it into another
project and run it on the same ``MT5Config`` (read only through its attributes) and parameter tree
(``mt5fn.init_params``, ``mt5fn.load_pretrained``)::

    {"shared": (V, d),
     "encoder": {"rel_bias": (buckets, H),  # T5 / mT5: block 0's table, shared by every block
                 "blocks": [{"rel_bias": (buckets, H),  # UMT5 only: a table per block
                             "attn_norm": (d,), "attn": {"q", "k", "v": (H*d_kv, d), "o": (d, H*d_kv)},
                             "mlp_norm": (d,), "mlp": {"wi": (d_ff, d) | "wi_0", "wi_1": (d_ff, d),
                                                       "wo": (d, d_ff)}}, ...],
                 "final_norm": (d,)},
     "decoder": {... blocks with "self_attn_norm", "self_attn", "cross_attn_norm", "cross_attn",
                 "mlp_norm", "mlp" ...},
     "lm_head": (V, d)}  # absent when the head is tied to "shared"

How to read it
--------------
Top to bottom; each piece uses only the ones above it:

 1. RMSNorm                         Zhang & Sennrich 2019
 2. relative position buckets       Shaw et al. 2018; Raffel et al. 2020, sec. 2.1
 3. position bias and masks         (UMT5: a table per block, Chung et al. 2023)
 4. attention                       Raffel et al. 2020, sec. 2.1: unscaled, additive bias
 5. feed-forward                    relu (T5), or gated (Shazeer 2020; T5 v1.1, mT5, UMT5)
 6. encoder and decoder blocks      pre-norm residual sublayers
 7. stacks                          embedding, blocks, final norm
 8. encode / hidden_states / forward / loss
 9. the decoding cache and one cached step
10. greedy decoding on that step

Papers: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (T5); Xue et al. 2021, "mT5: A Massively Multilingual Pre-trained Text-to-Text
Transformer" (the T5 v1.1 recipe: gated-GELU FFN, untied head, no output rescaling); Chung et al. 2023,
"UniMax: Fairer and More Effective Language Sampling for Large-Scale Multilingual Pretraining"
(UMT5); Shazeer 2020, "GLU Variants Improve Transformer"; Zhang & Sennrich 2019, "Root Mean Square
Layer Normalization"; Shaw et al. 2018, "Self-Attention with Relative Position Representations".

Shape letters: B batch, S source length, T target length, d d_model, H heads, d_kv per-head width,
d_ff FFN width, V vocabulary, M cache slots.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

if TYPE_CHECKING:
    from mt5fn.model import MT5Config

IGNORE_INDEX = -100  # labels with this id do not count in the loss (transformers' convention)


# ---------------------------------------------------------------------------------- 1. RMSNorm
def rms_norm(weight: Tensor, x: Tensor, eps: float) -> Tensor:
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last axis: no mean, no bias.

    Zhang & Sennrich 2019; T5's "simplified layer normalization" (Raffel et al. 2020, sec. 2.1).
    weight: (d,); x: (..., d) -> (..., d).
    """
    # The mean square is accumulated in float32 at least: half-precision inputs would lose it.
    # (float64 stays float64, where transformers would use float32.)
    variance = x.to(torch.promote_types(x.dtype, torch.float32)).pow(2).mean(-1, keepdim=True)  # (..., 1)
    x = x * torch.rsqrt(variance + eps)  # (..., d), float32 for half x
    if weight.dtype in (torch.float16, torch.bfloat16):
        x = x.to(weight.dtype)  # half weights: back to half before the scale, as transformers does
    return weight * x


# ------------------------------------------------------------------ 2. relative position buckets
def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Tensor:
    """Bucket ids in ``[0, num_buckets)`` for integer distances ``key - query`` (same shape, long).

    Shaw et al. 2018 learn an embedding per relative distance; T5 (Raffel et al. 2020, sec. 2.1)
    learns one scalar per head per *bucket*: half of the buckets hold the exact small distances,
    the other half grow logarithmically up to ``max_distance``, beyond which all distances share
    the last bucket. Bidirectional attention (the encoder) gives keys after the query their own
    half of the buckets; causal attention (the decoder) only sees keys at or before the query.
    """
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).long() * num_buckets  # keys after the query: upper half
        distance = relative_position.abs()
    else:
        offset = torch.zeros_like(relative_position)
        distance = -torch.clamp(relative_position, max=0)  # future keys (masked anyway) fold to 0
    exact = num_buckets // 2
    # Log-spaced buckets in the reference's exact order -- float32 log, truncate toward zero, clamp
    # -- because any other order moves some distances across a bucket boundary. Distance 0 takes
    # log(0) = -inf here (an arbitrary long after the cast); the where below discards it.
    log_ratio = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).to(torch.long)
    large = torch.clamp(large, max=num_buckets - 1)
    return offset + torch.where(distance < exact, distance, large)


# ----------------------------------------------------------------- 3. position bias and masks
def position_bias(table: Tensor, cfg: MT5Config, query_length: int, key_length: int, *,
                  bidirectional: bool, start: int = 0) -> Tensor:
    """The learned per-head bias of every (query, key) pair: (1, H, Tq, Tk).

    table: (buckets, H). Queries sit at absolute positions ``start .. start+Tq-1`` (``start`` is
    the number of tokens already cached when decoding step by step), keys at ``0 .. Tk-1``.
    """
    query = torch.arange(query_length, device=table.device)[:, None] + start  # (Tq, 1)
    key = torch.arange(key_length, device=table.device)[None, :]  # (1, Tk)
    buckets = relative_position_bucket(key - query, bidirectional, cfg.relative_attention_num_buckets,
                                       cfg.relative_attention_max_distance)  # (Tq, Tk)
    return rearrange(table[buckets], "q k h -> 1 h q k")  # (1, H, Tq, Tk)


def additive_mask(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean keep-mask -> 0 where kept, ``finfo(dtype).min`` where masked (same shape).

    Never -inf: a row whose keys are all masked then softmaxes to uniform weights instead of NaN,
    as in transformers (padded query rows produce finite, ignored outputs).
    """
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def padding_mask(attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, S) 1 = token, 0 = padding -> additive (B, 1, 1, S), or None for no padding."""
    if attention_mask is None:
        return None
    return additive_mask(attention_mask.bool()[:, None, None, :], dtype)  # (B, 1, 1, S)


def causal_mask(query_length: int, start: int, key_mask: Tensor | None, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """Queries at ``start .. start+Tq-1`` see keys ``0 ..`` their own position (and, with a (B, Tk)
    ``key_mask``, only unpadded ones): additive (1 | B, 1, Tq, start+Tq)."""
    query = torch.arange(query_length, device=device)[:, None] + start  # (Tq, 1)
    key = torch.arange(start + query_length, device=device)[None, :]  # (1, Tk)
    keep = (key <= query)[None, None]  # (1, 1, Tq, Tk)
    if key_mask is not None:
        keep = keep & key_mask.bool()[:, None, None, :]  # (B, 1, Tq, Tk)
    return additive_mask(keep, dtype)


# ------------------------------------------------------------------------------- 4. attention
def split_heads(x: Tensor, cfg: MT5Config) -> Tensor:
    """(B, T, H*d_kv) -> (B, H, T, d_kv). ``H*d_kv`` need not equal ``d_model``."""
    return rearrange(x, "b t (h d) -> b h t d", h=cfg.num_heads)


def key_value(p: dict, cfg: MT5Config, source: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values of ``source`` (B, S, d): two (B, H, S, d_kv).

    Separate from ``attention`` so that a decoding cache can store them: the self-attention ones
    of earlier tokens, and the cross-attention ones of the encoder output, computed once.
    """
    return split_heads(source @ p["k"].T, cfg), split_heads(source @ p["v"].T, cfg)  # (B, H, S, d_kv) x2


def attention(p: dict, cfg: MT5Config, x: Tensor, key: Tensor, value: Tensor,
              bias: Tensor | None, mask: Tensor | None) -> Tensor:
    """Multi-head attention the T5 way (Raffel et al. 2020, sec. 2.1).

    p: {"q", "k", "v": (H*d_kv, d), "o": (d, H*d_kv)}; x: (B, T, d) the queries' input;
    key, value: (B, H, S, d_kv); bias (position) and mask: additive, broadcastable to (B, H, T, S).
    Returns (B, T, d).
    """
    query = split_heads(x @ p["q"].T, cfg)  # (B, H, T, d_kv)
    # No 1/sqrt(d_kv) scaling: T5 folds it into the initialisation of q (Mesh TensorFlow).
    scores = query @ key.transpose(-1, -2)  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias  # relative position bias (self-attention only)
    if mask is not None:
        scores = scores + mask  # padding / causal: finfo.min added after the bias
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    context = rearrange(weights @ value, "b h t d -> b t (h d)")  # (B, T, H*d_kv)
    return context @ p["o"].T  # (B, T, d)


# ------------------------------------------------------------------------------ 5. feed-forward
def _gelu_new(x: Tensor) -> Tensor:
    """GELU's tanh approximation, written out as transformers writes it (``gelu_new``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# ``cfg.activation``: transformers' name for the ``ACT`` of ``feed_forward_proj = "[gated-]ACT"``
# (``"gated-gelu"`` means ``gelu_new``, the tanh approximation; plain ``gelu`` is the exact erf form).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "mish": F.mish,
    "relu2": lambda x: torch.relu(x).square(),
}


def feed_forward(p: dict, cfg: MT5Config, x: Tensor) -> Tensor:
    """The position-wise FFN: (B, T, d) -> (B, T, d).

    T5 (Raffel et al. 2020, sec. 2.1): ``wo(relu(wi x))``, p = {"wi", "wo"}. T5 v1.1, mT5
    (Xue et al. 2021) and UMT5: the gated form of Shazeer 2020, ``wo(act(wi_0 x) * (wi_1 x))``,
    p = {"wi_0", "wi_1", "wo"}, with gelu's tanh approximation (or silu, ...).
    """
    act = ACTIVATIONS[cfg.activation]
    if cfg.is_gated:
        inner = act(x @ p["wi_0"].T) * (x @ p["wi_1"].T)  # (B, T, d_ff)
    else:
        inner = act(x @ p["wi"].T)  # (B, T, d_ff)
    # float16 models keep wo in float32 (transformers' _keep_in_fp32_modules): v1.1 activations
    # overflow float16 here. The residual stream then promotes to float32 from the first FFN on.
    return inner.to(p["wo"].dtype) @ p["wo"].T  # (B, T, d)


# ------------------------------------------------------------------ 6. encoder and decoder blocks
def clamp_fp16(x: Tensor) -> Tensor:
    """transformers' float16 guard after every sublayer: clamp into the finite range (1000 inside
    it when an inf appeared). Other dtypes pass through."""
    if x.dtype != torch.float16:
        return x
    big = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(x).any(), big - 1000, big)
    return torch.clamp(x, min=-limit, max=limit)


def encoder_block(p: dict, cfg: MT5Config, x: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
    """Pre-norm residual sublayers (Raffel et al. 2020, sec. 2.1): x + SelfAttn(norm(x)), then
    x + FFN(norm(x)). x: (B, S, d) -> (B, S, d); bias (1, H, S, S); mask (B, 1, 1, S) or None."""
    eps = cfg.layer_norm_epsilon
    h = rms_norm(p["attn_norm"], x, eps)  # (B, S, d)
    x = clamp_fp16(x + attention(p["attn"], cfg, h, *key_value(p["attn"], cfg, h), bias, mask))
    h = rms_norm(p["mlp_norm"], x, eps)  # (B, S, d)
    return clamp_fp16(x + feed_forward(p["mlp"], cfg, h))  # (B, S, d)


def decoder_block(p: dict, cfg: MT5Config, x: Tensor, bias: Tensor, mask: Tensor,
                  cross: tuple[Tensor, Tensor], cross_mask: Tensor | None,
                  past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Causal self-attention, cross-attention to the encoder, FFN; each ``x + Sublayer(norm(x))``.

    x: (B, T, d); bias: (1, H, T, P+T); mask: causal (1 | B, 1, T, P+T); cross: the encoder
    output's keys and values (B, H, S, d_kv) x2 (no position bias there); cross_mask: (B, 1, 1, S).
    ``past``: keys and values (B, H, P, d_kv) x2 of P earlier tokens (a decoding cache), or None.
    Returns the new x (B, T, d) and this call's own self-attention keys and values (B, H, T, d_kv) x2:
    what a cache stores.
    """
    eps = cfg.layer_norm_epsilon
    h = rms_norm(p["self_attn_norm"], x, eps)  # (B, T, d)
    new_key, new_value = key_value(p["self_attn"], cfg, h)  # (B, H, T, d_kv) x2
    key, value = new_key, new_value
    if past is not None:
        key = torch.cat([past[0], new_key], dim=2)  # (B, H, P+T, d_kv)
        value = torch.cat([past[1], new_value], dim=2)
    x = clamp_fp16(x + attention(p["self_attn"], cfg, h, key, value, bias, mask))
    h = rms_norm(p["cross_attn_norm"], x, eps)  # (B, T, d)
    x = clamp_fp16(x + attention(p["cross_attn"], cfg, h, *cross, None, cross_mask))
    h = rms_norm(p["mlp_norm"], x, eps)  # (B, T, d)
    return clamp_fp16(x + feed_forward(p["mlp"], cfg, h)), (new_key, new_value)


# ------------------------------------------------------------------------------------ 7. stacks
Block = Callable[[int, dict, Tensor, Tensor], Tensor]  # (layer, block params, its table, x) -> x


def run_stack(stack: dict, cfg: MT5Config, x: Tensor, block: Block) -> list[Tensor]:
    """Every block in order, then the final RMSNorm (Raffel et al. 2020, sec. 2.1).

    x: the embeddings (B, T, d). Returns transformers' ``hidden_states`` layout: the embeddings,
    the output of every block but the last, then the stack output after the final norm (its
    last entry is the stack's output).
    """
    states = [x]
    for layer, p in enumerate(stack["blocks"]):
        # T5 / mT5: one table, block 0's, shared by all blocks (transformers computes the bias
        # once; computing it again per block gives the same values). UMT5 (Chung et al. 2023):
        # each block learns its own.
        table = p["rel_bias"] if cfg.per_layer_position_bias else stack["rel_bias"]  # (buckets, H)
        x = block(layer, p, table, x)  # (B, T, d)
        states.append(x)
    states[-1] = rms_norm(stack["final_norm"], x, cfg.layer_norm_epsilon)  # (B, T, d)
    return states


def embed(params: dict, ids: Tensor) -> Tensor:
    """Token ids (B, T) -> rows of the shared embedding (B, T, d); no position embedding."""
    return params["shared"][ids]  # (B, T, d)


def encoder_states(params: dict, cfg: MT5Config, input_ids: Tensor,
                   attention_mask: Tensor | None = None) -> list[Tensor]:
    """The encoder: bidirectional blocks over (B, S) ids -> num_layers + 1 states (B, S, d)."""
    x = embed(params, input_ids)  # (B, S, d)
    length = x.shape[1]
    mask = padding_mask(attention_mask, x.dtype)  # (B, 1, 1, S) | None

    def block(layer: int, p: dict, table: Tensor, x: Tensor) -> Tensor:
        bias = position_bias(table, cfg, length, length, bidirectional=True)  # (1, H, S, S)
        return encoder_block(p, cfg, x, bias, mask)

    return run_stack(params["encoder"], cfg, x, block)


def decoder_states(params: dict, cfg: MT5Config, ids: Tensor, cross: list[tuple[Tensor, Tensor]],
                   cross_mask: Tensor | None, decoder_attention_mask: Tensor | None = None,
                   past: list[tuple[Tensor, Tensor]] | None = None,
                   start: int = 0) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
    """The decoder over (B, T) ids -> (num_decoder_layers + 1 states (B, T, d), each block's new
    self-attention keys and values (B, H, T, d_kv) x2).

    cross: each block's cross-attention keys and values of the encoder output (``cross_key_values``).
    Teacher forcing: ``past=None, start=0``. A cached step: ``past`` holds each block's keys and
    values of the ``start`` tokens fed before, and the new tokens sit at positions ``start ..``.
    """
    x = embed(params, ids)  # (B, T, d)
    length = x.shape[1]
    mask = causal_mask(length, start, decoder_attention_mask, x.dtype, x.device)  # (1 | B, 1, T, start+T)
    new: list[tuple[Tensor, Tensor]] = []

    def block(layer: int, p: dict, table: Tensor, x: Tensor) -> Tensor:
        bias = position_bias(table, cfg, length, start + length, bidirectional=False, start=start)  # (1, H, T, start+T)
        x, key_value_new = decoder_block(p, cfg, x, bias, mask, cross[layer], cross_mask,
                                         None if past is None else past[layer])
        new.append(key_value_new)
        return x

    return run_stack(params["decoder"], cfg, x, block), new


def cross_key_values(params: dict, cfg: MT5Config, encoder_hidden: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Every decoder block's cross-attention keys and values of the encoder output (B, S, d):
    one (B, H, S, d_kv) pair per block. They do not change while decoding: computed once."""
    return [key_value(p["cross_attn"], cfg, encoder_hidden) for p in params["decoder"]["blocks"]]


def lm_logits(params: dict, cfg: MT5Config, x: Tensor) -> Tensor:
    """Decoder output (B, T, d) -> vocabulary logits (B, T, V).

    The head is ``lm_head`` when the tree has one (T5 v1.1, mT5, UMT5), else the shared embedding
    (T5: tied). ``scale_decoder_outputs`` (T5 v1.0's tied head) first multiplies by d_model**-0.5,
    as Mesh TensorFlow does; mT5 never does.
    """
    if cfg.scale_decoder_outputs:
        x = x * cfg.d_model ** -0.5
    head = params["lm_head"] if "lm_head" in params else params["shared"]  # (V, d)
    return x @ head.T  # (B, T, V)


# ---------------------------------------------------------- 8. encode / hidden_states / forward / loss
def encode(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Encoder output after its final norm: input_ids (B, S), attention_mask (B, S) -> (B, S, d)."""
    return encoder_states(params, cfg, input_ids, attention_mask)[-1]


def hidden_states(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
                  attention_mask: Tensor | None = None,
                  decoder_attention_mask: Tensor | None = None) -> dict[str, list[Tensor]]:
    """Teacher forcing's hidden states in transformers' layout: {"encoder": num_layers + 1 tensors
    (B, S, d), "decoder": num_decoder_layers + 1 tensors (B, T, d)}; each list ends with the
    stack's output after the final norm (the decoder's before the head's rescaling)."""
    encoder = encoder_states(params, cfg, input_ids, attention_mask)
    cross = cross_key_values(params, cfg, encoder[-1])
    decoder, _ = decoder_states(params, cfg, decoder_input_ids, cross, padding_mask(attention_mask, encoder[-1].dtype),
                                decoder_attention_mask)
    return {"encoder": encoder, "decoder": decoder}


def forward(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
            attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None) -> Tensor:
    """Teacher-forced logits: input_ids (B, S), decoder_input_ids (B, T) -> (B, T, V)."""
    states = hidden_states(params, cfg, input_ids, decoder_input_ids, attention_mask, decoder_attention_mask)
    return lm_logits(params, cfg, states["decoder"][-1])


def shift_right(cfg: MT5Config, labels: Tensor) -> Tensor:
    """Decoder inputs for ``labels`` (B, T): the start token, then the labels but the last;
    ignored (-100) labels read as padding. (B, T) -> (B, T)."""
    start = torch.full_like(labels[:, :1], cfg.decoder_start_token_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == IGNORE_INDEX, cfg.pad_token_id)


def loss(params: dict, cfg: MT5Config, input_ids: Tensor, labels: Tensor,
         attention_mask: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``labels`` (B, T) under teacher forcing, transformers' semantics: the
    decoder reads ``shift_right(labels)``; labels of -100 are ignored. Returns a 0-d tensor."""
    logits = forward(params, cfg, input_ids, shift_right(cfg, labels), attention_mask)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # log-softmax in float32 at least
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


# ------------------------------------------------------------------ 9. the cache and one cached step
@dataclasses.dataclass(frozen=True)
class Cache:
    """What incremental decoding carries between steps: the usual K/V cache of autoregressive decoding.

    Each new token's self-attention needs the keys and values of every earlier token; they are
    kept instead of recomputed. The cross-attention ones depend on the encoder output alone.
    """

    self_key: list[Tensor]  # per decoder block (B, H, M, d_kv): slots 0 .. position-1 written, zeros after
    self_value: list[Tensor]  # per decoder block (B, H, M, d_kv)
    cross: list[tuple[Tensor, Tensor]]  # per decoder block (B, H, S, d_kv) x2, from the encoder output
    cross_mask: Tensor | None  # (B, 1, 1, S) encoder padding, additive; None: no padding
    position: int  # tokens fed so far (the next one sits at this absolute position)


def init_cache(params: dict, cfg: MT5Config, encoder_hidden: Tensor, attention_mask: Tensor | None,
               max_length: int) -> Cache:
    """An empty cache for up to ``max_length`` decoder tokens against ``encoder_hidden`` (B, S, d);
    attention_mask: the encoder's (B, S) mask or None."""
    batch = encoder_hidden.shape[0]
    slots = [encoder_hidden.new_zeros(batch, cfg.num_heads, max_length, cfg.d_kv)
             for _ in params["decoder"]["blocks"]]  # per block (B, H, M, d_kv)
    return Cache(self_key=slots, self_value=[slot.clone() for slot in slots],
                 cross=cross_key_values(params, cfg, encoder_hidden),
                 cross_mask=padding_mask(attention_mask, encoder_hidden.dtype), position=0)


def decode_step(params: dict, cfg: MT5Config, cache: Cache, token_ids: Tensor) -> tuple[Tensor, Cache]:
    """Feed ``token_ids`` (B, T) after the cached tokens: their logits (B, T, V) and the next cache.

    The very decoder stack of teacher forcing, run on the new tokens only, with the cached keys and
    values prepended and the queries at their absolute positions (for the position bias and the
    causal mask). Out of place: ``cache`` is left as it was.
    """
    start, steps = cache.position, token_ids.shape[1]
    past = [(key[:, :, :start], value[:, :, :start])  # (B, H, start, d_kv) x2
            for key, value in zip(cache.self_key, cache.self_value)]
    states, new = decoder_states(params, cfg, token_ids, cache.cross, cache.cross_mask, None, past, start)
    # Write the new keys and values into slots start .. start+T-1 of new buffers.
    self_key = [torch.slice_scatter(slot, key, dim=2, start=start, end=start + steps)  # (B, H, M, d_kv)
                for slot, (key, _) in zip(cache.self_key, new)]
    self_value = [torch.slice_scatter(slot, value, dim=2, start=start, end=start + steps)
                  for slot, (_, value) in zip(cache.self_value, new)]
    next_cache = dataclasses.replace(cache, self_key=self_key, self_value=self_value, position=start + steps)
    return lm_logits(params, cfg, states[-1]), next_cache


# ------------------------------------------------------------------------------- 10. greedy decoding
@torch.no_grad()
def greedy(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None, *,
           max_new_tokens: int) -> Tensor:
    """Greedy decoding through the cached step: the most likely token, one at a time.

    input_ids, attention_mask: (B, S). Returns (B, 1 + n) ids in transformers' layout: the decoder
    start token first, a row's tokens up to and including its EOS, ``pad_token_id`` after it, and
    ``n <= max_new_tokens`` columns: decoding stops once every row has produced EOS.
    """
    encoder_hidden = encode(params, cfg, input_ids, attention_mask)  # (B, S, d)
    batch = input_ids.shape[0]
    # Fed: the start token, then every generated token but the last: max_new_tokens slots.
    cache = init_cache(params, cfg, encoder_hidden, attention_mask, max_new_tokens)
    tokens = torch.full((batch, 1), cfg.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)  # (B,) rows past their EOS
    for _ in range(max_new_tokens):
        logits, cache = decode_step(params, cfg, cache, tokens[:, -1:])  # (B, 1, V)
        chosen = logits[:, -1].argmax(dim=-1)  # (B,) the first of equal maxima, as torch.argmax
        chosen = torch.where(done, cfg.pad_token_id, chosen)  # finished rows are padded
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)  # (B, 1 + generated)
        done = done | (chosen == cfg.eos_token_id)
        if bool(done.all()):
            break
    return tokens
