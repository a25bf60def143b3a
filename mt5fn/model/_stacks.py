"""The two stacks of blocks, shared by every path that runs them.

Raffel et al. 2020, sec. 2.1: an embedding, a stack of blocks, a final
RMSNorm. ``run_stack`` is the one loop: teacher forcing, ``intermediates`` and
the cached decoding step (``mt5fn.decoding``) all run their blocks through it,
so none of them walks the blocks or applies the final norm itself.

The loop hands each block its self-attention bias: block 0's table computed
once and shared by every block (T5, mT5), or each block's own table computed
when its block runs (UMT5: so one (B, H, T, T) bias is alive at a time).

What runs per block is a function ``Block(p, hidden, bias, layer) -> hidden``:
the caller's closure over ``functional.encoder_block`` / ``decoder_block`` and
its other inputs. Wrapping that function from outside the loop is the one
extension seam: activation checkpointing (``checkpointed``) and the observers
of ``intermediates`` are wrappers, so the blocks themselves take neither.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from ..kernels import under_functorch
from ..functional import (causal_bias, decoder_block, dropout, encoder_block, padding_bias, rms_norm,
                          self_attention_bias)
from ._config import MT5Config

# (block params, hidden (B, T, d), self-attention bias, layer index) -> hidden (B, T, d)
Block = Callable[[dict, Tensor, "Tensor | None", int], Tensor]
# (layer index, relative-position table (buckets, H)) -> that block's self-attention bias
BiasOf = Callable[[int, Tensor], Tensor]
# a Block -> a Block that does the same and something more (recompute, observe)
Wrap = Callable[[Block], Block]


def embed(params: dict, ids: Tensor) -> Tensor:
    """Token ids (B, T) -> embeddings (B, T, d): rows of the shared table."""
    return F.embedding(ids, params["shared"])  # (B, T, d)


def run_stack(stack: dict, cfg: MT5Config, hidden: Tensor, bias_of: BiasOf, block: Block) -> Tensor:
    """Every block of ``stack`` in order, each with its self-attention bias, then the final norm.

    hidden: (B, T, d) -> (B, T, d).
    """
    shared = None if cfg.per_layer_position_bias else bias_of(0, stack["rel_bias"])  # block 0's table
    for layer, p in enumerate(stack["blocks"]):
        bias = bias_of(layer, p["rel_bias"]) if cfg.per_layer_position_bias else shared
        hidden = block(p, hidden, bias, layer)  # (B, T, d)
    return rms_norm(stack["final_norm"], hidden, cfg.layer_norm_epsilon)


def encoder_stack(params: dict, cfg: MT5Config, embedded: Tensor, attention_mask: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                  wrap: Wrap | None = None) -> Tensor:
    """The encoder over embeddings (B, S, d) with a (B, S) padding mask -> its output (B, S, d)."""
    hidden = dropout(embedded, dropout_rate, generator)  # (B, S, d)
    length = hidden.shape[1]
    mask = padding_bias(attention_mask, hidden.dtype)  # (B, 1, 1, S) | None

    def bias_of(layer: int, table: Tensor) -> Tensor:
        return self_attention_bias(table, cfg, mask, length, length, bidirectional=True,
                                   dtype=hidden.dtype)  # (1 | B, H, S, S)

    def block(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
        return encoder_block(p, cfg, hidden, bias, dropout_rate=dropout_rate, generator=generator)

    hidden = run_stack(params["encoder"], cfg, hidden, bias_of, block if wrap is None else wrap(block))
    return dropout(hidden, dropout_rate, generator)  # (B, S, d)


def decoder_stack(params: dict, cfg: MT5Config, embedded: Tensor, encoder_hidden: Tensor,
                  attention_mask: Tensor | None, decoder_attention_mask: Tensor | None, *,
                  dropout_rate: float = 0.0, generator: torch.Generator | None = None,
                  wrap: Wrap | None = None) -> Tensor:
    """The decoder, teacher-forced, over embeddings (B, T, d) -> its output (B, T, d) after the final norm.

    encoder_hidden: (B, S, d); attention_mask: the encoder's (B, S); decoder_attention_mask: (B, T).
    """
    hidden = dropout(embedded, dropout_rate, generator)  # (B, T, d)
    length = hidden.shape[1]
    causal = causal_bias(length, decoder_attention_mask, hidden.dtype, hidden.device)  # (1 | B, 1, T, T)
    cross_bias = padding_bias(attention_mask, hidden.dtype)  # (B, 1, 1, S) | None

    def bias_of(layer: int, table: Tensor) -> Tensor:
        return self_attention_bias(table, cfg, causal, length, length, bidirectional=False,
                                   dtype=hidden.dtype)  # (1 | B, H, T, T)

    def block(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
        return decoder_block(p, cfg, hidden, bias, encoder_hidden, cross_bias, dropout_rate=dropout_rate,
                             generator=generator)

    hidden = run_stack(params["decoder"], cfg, hidden, bias_of, block if wrap is None else wrap(block))
    return dropout(hidden, dropout_rate, generator)  # (B, T, d)


def checkpointed(generator: torch.Generator | None) -> Wrap:
    """A wrapper that recomputes each block in the backward (``torch.utils.checkpoint``), same dropout.

    torch's checkpoint restores the global RNGs for the recomputation but not an explicit
    ``generator``: its state is captured before each block, set again for the recomputation, and the
    generator's later state restored afterwards, so masks and later draws are as without checkpointing.
    Under ``torch.func`` transforms (``grad``, ``vjp``, ...), which do not support the saved-tensor
    hooks torch's checkpoint is built on, blocks run without recomputation: same values and
    gradients, without the memory saving.
    """
    def wrap(block: Block) -> Block:
        def recomputed(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
            if under_functorch():
                return block(p, hidden, bias, layer)
            state = None if generator is None else generator.get_state()
            calls = [0]

            def run(hidden: Tensor, bias: Tensor | None) -> Tensor:
                calls[0] += 1
                if generator is None or calls[0] == 1:
                    return block(p, hidden, bias, layer)
                later = generator.get_state()
                generator.set_state(state)
                try:
                    return block(p, hidden, bias, layer)
                finally:
                    generator.set_state(later)

            return torch.utils.checkpoint.checkpoint(run, hidden, bias, use_reentrant=False)

        return recomputed

    return wrap
