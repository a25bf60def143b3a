"""Model-level pure functions: ``encode``, ``decode``, ``forward``, ``loss``.

The T5 encoder-decoder (Raffel et al. 2020) over an explicit parameter pytree.
Parameters come first and the config second so that
``torch.func.grad(loss)(params, cfg, ...)`` and
``torch.func.vmap(forward, in_dims=(0, None, None, None))`` need no wrappers.

Each public function validates its inputs once (``mt5fn.checks``) and then
runs the unchecked functions below it (``_stacks``); other rooms that have
validated already (``generate``, ``score``) call those unchecked ones too.

Dropout is off unless a ``dropout_rate`` is passed, and then draws from the
``generator`` passed (``None``: torch's default generator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import IGNORE_INDEX, fused_loss_applies, linear, linear_cross_entropy, linear_form
from .. import checks as check
from ..checks import preflight
from ._config import MT5Config, check_config
from ._stacks import checkpointed, decoder_stack, embed, encoder_stack


def embed_pair(params: dict, input_ids: Tensor, decoder_input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Both stacks' embeddings from one lookup: backward then builds one dense (V, d) gradient
    of ``shared`` instead of two that are summed (each is a full-vocabulary buffer)."""
    ids = torch.cat([input_ids.flatten(), decoder_input_ids.flatten()])  # (B*S + B*T,)
    both = embed(params, ids)  # (B*S + B*T, d)
    source, target = both.split([input_ids.numel(), decoder_input_ids.numel()])
    return source.unflatten(0, input_ids.shape), target.unflatten(0, decoder_input_ids.shape)


def head_input(cfg: MT5Config, hidden: Tensor) -> Tensor:
    """The decoder output as the head reads it: T5 v1.0 (tied head) rescales by ``d_model ** -0.5``."""
    return hidden * (cfg.d_model ** -0.5) if cfg.scale_decoder_outputs else hidden


def lm_logits(params: dict, cfg: MT5Config, hidden: Tensor) -> Tensor:
    """Decoder output (B, T, d) -> vocabulary logits (B, T, V).

    T5 v1.0 (tied head) rescales by ``d_model ** -0.5`` first; the head is
    ``lm_head`` when present, else the shared embedding.
    """
    head = params.get("lm_head", params["shared"])  # (V, d), any weight-leaf form
    return linear(head_input(cfg, hidden), head)  # (B, T, V)


def run_encoder(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``encode`` without the checks (callers that validated already). (B, S) -> (B, S, d)."""
    return encoder_stack(params, cfg, embed(params, input_ids), attention_mask)


def run_seq2seq(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
                attention_mask: Tensor | None, decoder_attention_mask: Tensor | None, *, dropout_rate: float = 0.0,
                generator: torch.Generator | None = None, checkpoint_blocks: bool = False) -> Tensor:
    """The decoder output (B, T, d) of teacher forcing, without the checks."""
    wrap = checkpointed(generator) if checkpoint_blocks else None
    source, target = embed_pair(params, input_ids, decoder_input_ids)
    encoder_hidden = encoder_stack(params, cfg, source, attention_mask, dropout_rate=dropout_rate,
                                   generator=generator, wrap=wrap)  # (B, S, d)
    return decoder_stack(params, cfg, target, encoder_hidden, attention_mask, decoder_attention_mask,
                         dropout_rate=dropout_rate, generator=generator, wrap=wrap)  # (B, T, d)


def encode(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Encoder output. input_ids: (B, S) -> (B, S, d_model)."""
    check_config(cfg)
    check.check_params(params, cfg)
    check.check_ids("input_ids", input_ids, cfg, device=check.params_device(params))
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    rate = check.check_dropout(dropout_rate)
    preflight.check_encode(params, cfg, input_ids, attention_mask)
    return encoder_stack(params, cfg, embed(params, input_ids), attention_mask, dropout_rate=rate,
                         generator=generator)


def decode(params: dict, cfg: MT5Config, decoder_input_ids: Tensor, encoder_hidden: Tensor,
           attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None, *,
           dropout_rate: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Decoder output after the final norm (before the head), teacher-forced.

    decoder_input_ids: (B, T); encoder_hidden: (B, S, d); attention_mask: the
    encoder's (B, S) mask. Returns (B, T, d_model).
    """
    check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    check.check_ids("decoder_input_ids", decoder_input_ids, cfg, device=check.params_device(params))
    check.check_hidden("encoder_hidden", encoder_hidden, cfg, params)
    check.check_same_batch("decoder_input_ids", decoder_input_ids, encoder_hidden, "encoder_hidden")
    if attention_mask is not None:
        check.check_mask("attention_mask", attention_mask, encoder_hidden[..., 0], "encoder_hidden[..., 0]")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, decoder_input_ids, "decoder_input_ids")
    rate = check.check_dropout(dropout_rate)
    preflight.check_decode(params, cfg, decoder_input_ids, encoder_hidden.shape[1])
    return decoder_stack(params, cfg, embed(params, decoder_input_ids), encoder_hidden, attention_mask,
                         decoder_attention_mask, dropout_rate=rate, generator=generator)


def check_pair(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_ids: Tensor, decoder_name: str,
               attention_mask: Tensor | None, decoder_attention_mask: Tensor | None) -> None:
    """The checks of every teacher-forced call: config, tree, both id tensors and their masks."""
    check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    device = check.params_device(params)
    check.check_ids("input_ids", input_ids, cfg, device=device)
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    check.check_ids(decoder_name, decoder_ids, cfg, allow_ignore=decoder_name == "labels", device=device)
    check.check_same_batch(decoder_name, decoder_ids, input_ids, "input_ids")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, decoder_ids, decoder_name)


def forward(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
            attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None, *,
            dropout_rate: float = 0.0, generator: torch.Generator | None = None,
            checkpoint_blocks: bool = False) -> Tensor:
    """Teacher-forced logits. input_ids: (B, S); decoder_input_ids: (B, T) -> (B, T, V).

    ``checkpoint_blocks=True`` recomputes each block in the backward (activation
    checkpointing): same values and gradients, far less memory held for the backward.
    """
    check_pair(params, cfg, input_ids, decoder_input_ids, "decoder_input_ids", attention_mask,
               decoder_attention_mask)
    rate = check.check_dropout(dropout_rate)
    check.check_bool("checkpoint_blocks", checkpoint_blocks)
    preflight.check_seq2seq(params, cfg, input_ids, decoder_input_ids, attention_mask, call="forward",
                            decoder_name="decoder_input_ids", logits="full", checkpointed=checkpoint_blocks)
    hidden = run_seq2seq(params, cfg, input_ids, decoder_input_ids, attention_mask, decoder_attention_mask,
                         dropout_rate=rate, generator=generator, checkpoint_blocks=checkpoint_blocks)
    return lm_logits(params, cfg, hidden)  # (B, T, V)


def shift_right(labels: Tensor, cfg: MT5Config) -> Tensor:
    """Decoder inputs from labels: prepend ``decoder_start_token_id``, drop the last
    label, and turn ignored (-100) positions into ``pad_token_id``. (B, T) -> (B, T)."""
    start = torch.full_like(labels[:, :1], cfg.decoder_start_token_id)  # (B, 1)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == IGNORE_INDEX, cfg.pad_token_id)


def loss(params: dict, cfg: MT5Config, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
         *, decoder_attention_mask: Tensor | None = None, reduction: str = "mean", dropout_rate: float = 0.0,
         generator: torch.Generator | None = None, checkpoint_blocks: bool = False) -> Tensor:
    """Cross-entropy of ``labels`` (B, T) under teacher forcing, transformers' semantics.

    The decoder reads ``shift_right(labels)``; positions labelled -100 are
    ignored. ``reduction="mean"`` averages over the kept tokens (0-d tensor),
    ``"sum"`` adds them (for gradient accumulation over uneven batches).
    The log-softmax runs in float32 for half-precision parameters (float64 stays float64).
    Outside ``vmap`` / forward-mode AD / nested transforms the head and the loss run fused
    and chunked (``kernels.linear_cross_entropy``): same value, no (B*T, V) logits kept;
    that path is first-order only (``autograd.grad(..., create_graph=True)`` through it is
    refused; nested ``torch.func`` transforms take the unfused path).
    ``checkpoint_blocks=True``: activation checkpointing, as in ``forward``.
    """
    check_pair(params, cfg, input_ids, labels, "labels", attention_mask, decoder_attention_mask)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    rate = check.check_dropout(dropout_rate)
    check.check_bool("checkpoint_blocks", checkpoint_blocks)
    head = params.get("lm_head", params["shared"])  # (V, d)
    fused = fused_loss_applies() and linear_form(head) == "dense"
    preflight.check_seq2seq(params, cfg, input_ids, labels, attention_mask, call="loss", decoder_name="labels",
                            logits="fused" if fused else "loss", checkpointed=checkpoint_blocks)
    hidden = run_seq2seq(params, cfg, input_ids, shift_right(labels, cfg), attention_mask, decoder_attention_mask,
                         dropout_rate=rate, generator=generator, checkpoint_blocks=checkpoint_blocks)  # (B, T, d)
    if fused:
        # same value, without holding (B*T, V) logits, log-probs and their gradients at once
        return linear_cross_entropy(head_input(cfg, hidden).flatten(0, 1), head, labels.flatten(),
                                    reduction=reduction)
    logits = lm_logits(params, cfg, hidden)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32; no copy otherwise
    return F.cross_entropy(logits.flatten(0, 1), labels.long().flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)
