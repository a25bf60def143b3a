"""Model-level pure functions: ``encode``, ``decode``, ``forward``, ``loss``.

The T5 encoder-decoder (Raffel et al. 2020) over an explicit parameter pytree.
Parameters come first and the config second so that
``torch.func.grad(loss)(params, cfg, ...)`` and
``torch.func.vmap(forward, in_dims=(0, None, None, None))`` need no wrappers.

Dropout is off unless a ``dropout_rate`` is passed, and then draws from the
``generator`` passed (``None``: torch's default generator).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import Tensor

from ..functional import (Observer, causal_bias, decoder_block, dropout, encoder_block, fused_loss_applies, linear,
                          linear_cross_entropy, linear_form, padding_bias, rms_norm, self_attention_bias)
from . import _preflight as preflight
from . import _validate as check
from ._config import MT5Config


def _embed(params: dict, ids: Tensor) -> Tensor:
    return F.embedding(ids, params["shared"])  # (B, T, d)


def _embed_pair(params: dict, input_ids: Tensor, decoder_input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Both stacks' embeddings from one lookup: backward then builds one dense (V, d) gradient
    of ``shared`` instead of two that are summed (each is a full-vocabulary buffer)."""
    ids = torch.cat([input_ids.flatten(), decoder_input_ids.flatten()])  # (B*S + B*T,)
    both = _embed(params, ids)  # (B*S + B*T, d)
    source, target = both.split([input_ids.numel(), decoder_input_ids.numel()])
    return source.unflatten(0, input_ids.shape), target.unflatten(0, decoder_input_ids.shape)


def _checkpointed(block_fn: Callable[..., Tensor], generator: torch.Generator | None) -> Callable[..., Tensor]:
    """``block_fn`` recomputed in the backward (``torch.utils.checkpoint``), drawing the same dropout.

    torch's checkpoint restores the global RNGs for the recomputation but not an explicit
    ``generator``: its state is captured before the block, set for the recomputation, and the
    generator's later state restored afterwards, so masks and later draws are as without checkpointing.
    """
    state = None if generator is None else generator.get_state()
    calls = [0]

    def run(*args: Tensor) -> Tensor:
        calls[0] += 1
        if generator is None or calls[0] == 1:
            return block_fn(*args)
        later = generator.get_state()
        generator.set_state(state)
        try:
            return block_fn(*args)
        finally:
            generator.set_state(later)

    return lambda *args: torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


def _block_biases(stack: dict, cfg: MT5Config,
                  bias_of: Callable[[Tensor], Tensor]) -> Iterator[tuple[dict, Tensor]]:
    """Each block of ``stack`` with its self-attention bias: block 0's table shared by every block
    (T5, mT5: computed once), or each block's own table (UMT5: computed when its block runs, so one
    (B, H, T, T) bias is alive at a time)."""
    shared = None if cfg.per_layer_position_bias else bias_of(stack["rel_bias"])
    for block in stack["blocks"]:
        yield block, (bias_of(block["rel_bias"]) if cfg.per_layer_position_bias else shared)


def _encode(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None,
            rate: float, generator: torch.Generator | None, embedded: Tensor | None = None,
            checkpoint_blocks: bool = False, observe: Observer | None = None) -> Tensor:
    """``observe`` (``intermediates``): ``("hidden", x)`` for the embedding output and each block's
    output, and the blocks' attention probabilities."""
    stack = params["encoder"]
    embedded = _embed(params, input_ids) if embedded is None else embedded
    hidden = dropout(embedded, rate, generator)  # (B, S, d)
    if observe is not None:
        observe("hidden", hidden)
    length = input_ids.shape[1]
    mask_bias = padding_bias(attention_mask, hidden.dtype)  # (B, 1, 1, S) | None

    def bias_of(table: Tensor) -> Tensor:
        return self_attention_bias(table, cfg, mask_bias, length, length, bidirectional=True,
                                   dtype=hidden.dtype)  # (1 | B, H, S, S)

    for block, bias in _block_biases(stack, cfg, bias_of):
        def run(hidden: Tensor, bias: Tensor | None, block: dict = block) -> Tensor:
            return encoder_block(block, cfg, hidden, bias, dropout_rate=rate, generator=generator, observe=observe)

        hidden = (_checkpointed(run, generator) if checkpoint_blocks else run)(hidden, bias)
        if observe is not None:
            observe("hidden", hidden)
    hidden = rms_norm(stack["final_norm"], hidden, cfg.layer_norm_epsilon)
    return dropout(hidden, rate, generator)  # (B, S, d)


def _decode(params: dict, cfg: MT5Config, decoder_input_ids: Tensor, encoder_hidden: Tensor,
            attention_mask: Tensor | None, decoder_attention_mask: Tensor | None, rate: float,
            generator: torch.Generator | None, embedded: Tensor | None = None,
            checkpoint_blocks: bool = False, observe: Observer | None = None) -> Tensor:
    stack = params["decoder"]
    embedded = _embed(params, decoder_input_ids) if embedded is None else embedded
    hidden = dropout(embedded, rate, generator)  # (B, T, d)
    if observe is not None:
        observe("hidden", hidden)
    length = decoder_input_ids.shape[1]
    causal = causal_bias(length, decoder_attention_mask, hidden.dtype, hidden.device)  # (1 | B, 1, T, T)
    cross_bias = padding_bias(attention_mask, hidden.dtype)  # (B, 1, 1, S) | None

    def bias_of(table: Tensor) -> Tensor:
        return self_attention_bias(table, cfg, causal, length, length, bidirectional=False,
                                   dtype=hidden.dtype)  # (1 | B, H, T, T)

    for block, bias in _block_biases(stack, cfg, bias_of):
        def run(hidden: Tensor, bias: Tensor | None, encoder_hidden: Tensor, block: dict = block) -> Tensor:
            return decoder_block(block, cfg, hidden, bias, encoder_hidden, cross_bias,
                                 dropout_rate=rate, generator=generator, observe=observe)

        hidden = (_checkpointed(run, generator) if checkpoint_blocks else run)(hidden, bias, encoder_hidden)
        if observe is not None:
            observe("hidden", hidden)
    hidden = rms_norm(stack["final_norm"], hidden, cfg.layer_norm_epsilon)
    return dropout(hidden, rate, generator)  # (B, T, d)


def lm_logits(params: dict, cfg: MT5Config, hidden: Tensor) -> Tensor:
    """Decoder output (B, T, d) -> vocabulary logits (B, T, V).

    T5 v1.0 (tied head) rescales by ``d_model ** -0.5`` first; the head is
    ``lm_head`` when present, else the shared embedding.
    """
    if cfg.scale_decoder_outputs:
        hidden = hidden * (cfg.d_model ** -0.5)
    head = params.get("lm_head", params["shared"])  # (V, d), any weight-leaf form
    return linear(hidden, head)  # (B, T, V)


def encode(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Encoder output. input_ids: (B, S) -> (B, S, d_model)."""
    check.check_config(cfg)
    check.check_params(params, cfg)
    check.check_ids("input_ids", input_ids, cfg, device=check.params_device(params))
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    rate = check.check_dropout(dropout_rate)
    preflight.check_encode(params, cfg, input_ids, attention_mask)
    return _encode(params, cfg, input_ids, attention_mask, rate, generator)


def decode(params: dict, cfg: MT5Config, decoder_input_ids: Tensor, encoder_hidden: Tensor,
           attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Decoder output after the final norm (before the head), teacher-forced.

    decoder_input_ids: (B, T); encoder_hidden: (B, S, d); attention_mask: the
    encoder's (B, S) mask. Returns (B, T, d_model).
    """
    check.check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    check.check_ids("decoder_input_ids", decoder_input_ids, cfg, device=check.params_device(params))
    check.check_hidden("encoder_hidden", encoder_hidden, cfg, params)
    check.check_same_batch("decoder_input_ids", decoder_input_ids, encoder_hidden, "encoder_hidden")
    if attention_mask is not None:
        check.check_mask("attention_mask", attention_mask, encoder_hidden[..., 0], "encoder_hidden[..., 0]")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, decoder_input_ids, "decoder_input_ids")
    rate = check.check_dropout(dropout_rate)
    preflight.check_decode(params, cfg, decoder_input_ids, encoder_hidden.shape[1])
    return _decode(params, cfg, decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask,
                   rate, generator)


def _check_pair(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None) -> None:
    check.check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    check.check_ids("input_ids", input_ids, cfg, device=check.params_device(params))
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")


def forward(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
            attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None, *,
            dropout_rate: float = 0.0, generator: torch.Generator | None = None,
            checkpoint_blocks: bool = False) -> Tensor:
    """Teacher-forced logits. input_ids: (B, S); decoder_input_ids: (B, T) -> (B, T, V).

    ``checkpoint_blocks=True`` recomputes each block in the backward (activation
    checkpointing): same values and gradients, far less memory held for the backward.
    """
    _check_pair(params, cfg, input_ids, attention_mask)
    check.check_ids("decoder_input_ids", decoder_input_ids, cfg, device=check.params_device(params))
    check.check_same_batch("decoder_input_ids", decoder_input_ids, input_ids, "input_ids")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, decoder_input_ids, "decoder_input_ids")
    rate = check.check_dropout(dropout_rate)
    check.check_bool("checkpoint_blocks", checkpoint_blocks)
    preflight.check_seq2seq(params, cfg, input_ids, decoder_input_ids, attention_mask, call="forward",
                            decoder_name="decoder_input_ids", logits="full", checkpointed=checkpoint_blocks)
    source, target = _embed_pair(params, input_ids, decoder_input_ids)
    encoder_hidden = _encode(params, cfg, input_ids, attention_mask, rate, generator, source, checkpoint_blocks)
    hidden = _decode(params, cfg, decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask,
                     rate, generator, target, checkpoint_blocks)
    return lm_logits(params, cfg, hidden)


def shift_right(labels: Tensor, cfg: MT5Config) -> Tensor:
    """Decoder inputs from labels: prepend ``decoder_start_token_id``, drop the last
    label, and turn ignored (-100) positions into ``pad_token_id``. (B, T) -> (B, T)."""
    start = torch.full_like(labels[:, :1], cfg.decoder_start_token_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == check.IGNORE_INDEX, cfg.pad_token_id)


def loss(params: dict, cfg: MT5Config, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
         *, decoder_attention_mask: Tensor | None = None, reduction: str = "mean", dropout_rate: float = 0.0,
         generator: torch.Generator | None = None, checkpoint_blocks: bool = False) -> Tensor:
    """Cross-entropy of ``labels`` (B, T) under teacher forcing, transformers' semantics.

    The decoder reads ``shift_right(labels)``; positions labelled -100 are
    ignored. ``reduction="mean"`` averages over the kept tokens (0-d tensor),
    ``"sum"`` adds them (for gradient accumulation over uneven batches).
    The log-softmax runs in float32 for half-precision parameters (float64 stays float64).
    Outside ``vmap`` / forward-mode AD / nested transforms the head and the loss run fused
    and chunked (``functional._cross_entropy``): same value, no (B*T, V) logits kept;
    that path is first-order only (``autograd.grad(..., create_graph=True)`` through it is
    refused; nested ``torch.func`` transforms take the unfused path).
    ``checkpoint_blocks=True``: activation checkpointing, as in ``forward``.
    """
    _check_pair(params, cfg, input_ids, attention_mask)
    check.check_ids("labels", labels, cfg, allow_ignore=True, device=check.params_device(params))
    check.check_same_batch("labels", labels, input_ids, "input_ids")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, labels, "labels")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    rate = check.check_dropout(dropout_rate)
    check.check_bool("checkpoint_blocks", checkpoint_blocks)
    head = params.get("lm_head", params["shared"])  # (V, d)
    fused = fused_loss_applies() and linear_form(head) == "dense"
    preflight.check_seq2seq(params, cfg, input_ids, labels, attention_mask, call="loss", decoder_name="labels",
                            logits="fused" if fused else "loss", checkpointed=checkpoint_blocks)
    decoder_input_ids = shift_right(labels, cfg)
    source, target = _embed_pair(params, input_ids, decoder_input_ids)
    encoder_hidden = _encode(params, cfg, input_ids, attention_mask, rate, generator, source, checkpoint_blocks)
    hidden = _decode(params, cfg, decoder_input_ids, encoder_hidden, attention_mask,
                     decoder_attention_mask, rate, generator, target, checkpoint_blocks)
    if fused:
        # same value, without holding (B*T, V) logits, log-probs and their gradients at once
        if cfg.scale_decoder_outputs:
            hidden = hidden * (cfg.d_model ** -0.5)
        return linear_cross_entropy(hidden.flatten(0, 1), head, labels.flatten(), reduction=reduction)
    logits = lm_logits(params, cfg, hidden)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32; no copy otherwise
    return F.cross_entropy(logits.flatten(0, 1), labels.long().flatten(), ignore_index=check.IGNORE_INDEX,
                           reduction=reduction)
