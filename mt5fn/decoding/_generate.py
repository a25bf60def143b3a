"""``generate``: greedy, sampling and beam-search decoding for the T5 family.

The input is encoded once; the decoder then runs one cached step per token
(``_cache.step_hidden``, i.e. ``functional.decoder_block`` with the cache as
an argument) on a ``prepare_decoding`` tree, writing its K/V cache in place.
Token choice lives in ``_sampling`` (greedy / sampling) and ``_beam_search``;
score processing in ``_logits_processors``. The output layout is
transformers': the decoder start token first, then the generated tokens,
``pad_token_id`` after a row's EOS, and only as many columns as the longest
row needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor

from ..model import MT5Config, encode, lm_logits
from ..model import _preflight as preflight
from ..model import _validate as check
from ._beam_search import beam_loop
from ._cache import build_cache, distance_bias, step_hidden
from ._generation_config import GenerationConfig
from ._logits_processors import Processing
from ._prepare import is_prepared, one_call_min_numel, prepare_decoding
from ._sampling import sample_loop
from ._threads import intra_op_threads, loop_threads

# The encoder of an input this large (batch x tokens) runs on all of torch's threads: its products
# are big enough to split. Below it, a parallel region costs more than it saves (see loop_threads).
_ENCODER_ROWS_FOR_ALL_THREADS = 256


def resolve_config(config: GenerationConfig | None, overrides: dict[str, Any]) -> GenerationConfig:
    """``config`` (default: ``GenerationConfig()``) with ``overrides`` applied and validated."""
    if config is None:
        config = GenerationConfig()
    elif not isinstance(config, GenerationConfig):
        raise TypeError(f"config must be an mt5fn.GenerationConfig or None, got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    if config.max_new_tokens is None:
        raise ValueError("max_new_tokens must be given (an int >= 1), as an argument or in the GenerationConfig")
    return config


def processing(cfg: MT5Config, gc: GenerationConfig) -> Processing:
    """The score processing a ``GenerationConfig`` asks for."""
    return Processing(
        eos_token_id=cfg.eos_token_id, min_new_tokens=gc.min_new_tokens, repetition_penalty=gc.repetition_penalty,
        no_repeat_ngram_size=gc.no_repeat_ngram_size, do_sample=gc.do_sample, temperature=gc.temperature,
        top_k=gc.top_k, top_p=gc.top_p, min_tokens_to_keep=2 if gc.num_beams > 1 else 1)


def _check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def generate(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None,
             config: GenerationConfig | None = None, *, generator: torch.Generator | None = None,
             **overrides: Any) -> Tensor:
    """Decode continuations of ``input_ids`` (B, S); returns (B * num_return_sequences, 1 + n) token ids.

    The settings are ``config`` (a ``GenerationConfig``) with keyword
    ``overrides`` of its fields (``max_new_tokens=32, num_beams=4``, ...);
    sampling draws from ``generator``. Column 0 is ``decoder_start_token_id``;
    rows end at EOS and are padded with ``pad_token_id``; there are as few
    columns as the longest row needs.

    ``params`` may be a ``prepare_decoding`` tree: hold one for repeated
    calls. Plain parameters are prepared for this call alone (the cost is in
    the README's generation table) and nothing is remembered afterwards.
    """
    check.check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    check.check_ids("input_ids", input_ids, cfg, min_batch=1, device=check.params_device(params))
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    gc = resolve_config(config, overrides)
    _check_generator(generator)
    return decode_tokens(params, cfg, input_ids, attention_mask, gc, generator=generator)


def decode_tokens(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None,
                  gc: GenerationConfig, *, generator: torch.Generator | None = None,
                  beam_search: bool | None = None, on_step: Callable[[], None] | None = None) -> Tensor:
    """``generate`` after validation. ``beam_search`` forces the loop (None: beams when ``num_beams > 1``),
    so one-beam beam search stays reachable for the specification; ``on_step`` is called after every
    decoder step (the command line's profiler)."""
    beam_search = gc.num_beams > 1 if beam_search is None else beam_search
    preflight.check_generate(params, cfg, input_ids, attention_mask, max_new_tokens=gc.max_new_tokens,
                             num_beams=gc.num_beams, num_return_sequences=gc.num_return_sequences,
                             beam_search=beam_search)
    batch, device = input_ids.shape[0], input_ids.device
    repeat = gc.num_beams if beam_search else gc.num_return_sequences
    rows = batch * repeat
    spec = processing(cfg, gc)

    # The per-step work outside the LM head runs on few intra-op threads, the head and a large
    # encoder on all of torch's (see _threads.loop_threads: tiny parallel regions stall a busy CPU).
    all_threads = torch.get_num_threads()
    step_threads = loop_threads() or all_threads
    encoder_threads = all_threads if input_ids.numel() >= _ENCODER_ROWS_FOR_ALL_THREADS else step_threads
    with torch.inference_mode():
        with intra_op_threads(encoder_threads):
            encoder_hidden = encode(params, cfg, input_ids, attention_mask)  # (B, S, d)
        with intra_op_threads(step_threads):
            weights = params if is_prepared(params) else prepare_decoding(
                params, cfg, rows=rows, min_numel=one_call_min_numel(rows, gc.max_new_tokens))
            cache = build_cache(weights, cfg, encoder_hidden, attention_mask, gc.max_new_tokens, repeat=repeat)
            distances = distance_bias(weights, cfg, gc.max_new_tokens)

            def step(tokens: Tensor, t: int) -> Tensor:
                nonlocal cache
                hidden, cache = step_hidden(weights, cfg, cache, tokens[:, None], inplace=True, position=t,
                                            distances=distances)
                with intra_op_threads(all_threads):
                    logits = lm_logits(weights, cfg, hidden)  # (N, 1, V)
                if on_step is not None:
                    on_step()
                return logits[:, 0]  # (N, V)

            def reorder(source_rows: Tensor, t: int) -> None:
                # Beams move between rows of the same input only, so the cross K/V need no reordering.
                nonlocal cache
                cache = dataclasses.replace(cache, self_key=cache.self_key.index_select(1, source_rows),
                                            self_value=cache.self_value.index_select(1, source_rows))

            if beam_search:
                return beam_loop(step, reorder, cfg, spec, batch, gc.num_beams, gc.max_new_tokens,
                                 gc.length_penalty, gc.early_stopping, gc.num_return_sequences, generator, device)
            return sample_loop(step, cfg, spec, rows, gc.max_new_tokens, generator, device)
