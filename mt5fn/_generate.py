"""``generate``: greedy, sampling and beam-search decoding for the T5 family.

The input is encoded once; the decoder then runs one cached step per token
(``_cache.run_step``) on weights fused and re-laid-out for the step's row
count (``_decoder_weights.PreparedDecoder``), writing its K/V cache in place.
Token choice lives in ``_sampling`` (greedy / sampling) and ``_beam_search``;
score processing in ``_logits_processors``. The output layout is
transformers': the decoder start token first, then the generated tokens,
``pad_token_id`` after a row's EOS, and only as many columns as the longest
row needs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import _validate as check
from ._beam_search import beam_loop
from ._cache import build_cache, run_step
from ._config import MT5Config
from ._decoder_weights import intra_op_threads, loop_threads, prepared_decoder
from ._logits_processors import Processing
from ._model import encode
from ._sampling import sample_loop


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_arguments(cfg: MT5Config, *, max_new_tokens: Any, min_new_tokens: Any, num_beams: Any, do_sample: Any,
                     temperature: Any, top_k: Any, top_p: Any, length_penalty: Any, early_stopping: Any,
                     num_return_sequences: Any, repetition_penalty: Any, no_repeat_ngram_size: Any,
                     generator: Any) -> Processing:
    _int("max_new_tokens", max_new_tokens, 1)
    _int("min_new_tokens", min_new_tokens, 0)
    _int("num_beams", num_beams, 1)
    _int("num_return_sequences", num_return_sequences, 1)
    _int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    if not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be a bool, got {do_sample!r}")
    temperature = _real("temperature", temperature)
    if do_sample and temperature <= 0.0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r} "
                         "(for greedy decoding use do_sample=False)")
    if top_k is not None:
        _int("top_k", top_k, 1)
    if top_p is not None:
        top_p = _real("top_p", top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    length_penalty = _real("length_penalty", length_penalty)
    if early_stopping not in (True, False, "never") or isinstance(early_stopping, int) and not isinstance(
            early_stopping, bool):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    repetition_penalty = _real("repetition_penalty", repetition_penalty)
    if repetition_penalty <= 0.0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams}) "
                         "for beam search")
    if num_beams == 1 and not do_sample and num_return_sequences != 1:
        raise ValueError(f"greedy decoding returns one sequence per input; got num_return_sequences="
                         f"{num_return_sequences} (use num_beams >= num_return_sequences or do_sample=True)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return Processing(
        eos_token_id=cfg.eos_token_id, min_new_tokens=min_new_tokens, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, do_sample=do_sample, temperature=temperature, top_k=top_k,
        top_p=top_p, min_tokens_to_keep=2 if num_beams > 1 else 1)


def generate(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None = None, *,
             max_new_tokens: int, min_new_tokens: int = 0, num_beams: int = 1, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             length_penalty: float = 1.0, early_stopping: bool | str = False, num_return_sequences: int = 1,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             generator: torch.Generator | None = None) -> Tensor:
    """Decode continuations of ``input_ids`` (B, S); returns (B * num_return_sequences, 1 + n) token ids.

    ``num_beams == 1``: greedy, or sampling with ``do_sample=True`` (temperature,
    ``top_k``, ``top_p``; draws from ``generator``). ``num_beams > 1``: beam
    search (beam sampling with ``do_sample``) ranked by ``log p / length **
    length_penalty``, stopping per ``early_stopping`` (True / False / "never"),
    returning the ``num_return_sequences`` best per input. ``min_new_tokens``
    bans EOS until that many tokens exist; ``repetition_penalty`` and
    ``no_repeat_ngram_size`` act on the decoder ids (start token included).
    Column 0 is ``decoder_start_token_id``; rows end at EOS and are padded
    with ``pad_token_id``; there are as few columns as the longest row needs.

    The decoder weights are copied once into fused, step-friendly layouts and
    the copy is remembered for the next call while the parameters are
    unchanged (``mt5fn._decoder_weights.clear_prepared()`` frees it).
    """
    check.check_config(cfg)
    check.check_params(params)
    check.check_ids("input_ids", input_ids, cfg)
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    spec = _check_arguments(
        cfg, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, length_penalty=length_penalty,
        early_stopping=early_stopping, num_return_sequences=num_return_sequences,
        repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size, generator=generator)
    return decode_tokens(params, cfg, input_ids, attention_mask, spec, max_new_tokens=max_new_tokens,
                         num_beams=num_beams, beam_search=num_beams > 1, length_penalty=length_penalty,
                         early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                         generator=generator)


def check_arguments(cfg: MT5Config, **kwargs: Any) -> Processing:
    """Validate ``generate``'s keyword arguments (defaults filled in) without running anything."""
    defaults = dict(min_new_tokens=0, num_beams=1, do_sample=False, temperature=1.0, top_k=None, top_p=None,
                    length_penalty=1.0, early_stopping=False, num_return_sequences=1, repetition_penalty=1.0,
                    no_repeat_ngram_size=0, generator=None)
    return _check_arguments(cfg, **{**defaults, **kwargs})


def decode_tokens(params: dict, cfg: MT5Config, input_ids: Tensor, attention_mask: Tensor | None,
                  spec: Processing, *, max_new_tokens: int, num_beams: int, beam_search: bool,
                  length_penalty: float = 1.0, early_stopping: bool | str = False, num_return_sequences: int = 1,
                  generator: torch.Generator | None = None, on_step: Callable[[], None] | None = None) -> Tensor:
    """``generate`` after validation. ``beam_search`` chooses the loop, so one-beam beam search
    (which ``generate`` runs as greedy) stays reachable for the specification; ``on_step`` is
    called after every decoder step (the command line's profiler)."""
    batch, device = input_ids.shape[0], input_ids.device
    repeat = num_beams if beam_search else num_return_sequences
    rows = batch * repeat

    # Everything but the LM head runs on few intra-op threads, the head on all of torch's
    # (see _decoder_weights.loop_threads: tiny parallel regions stall on a busy CPU).
    head_threads = torch.get_num_threads()
    with torch.inference_mode(), intra_op_threads(loop_threads() or head_threads):
        encoder_hidden = encode(params, cfg, input_ids, attention_mask)  # (B, S, d)
        weights = prepared_decoder(params, cfg, rows, max_new_tokens)
        weights.head_threads = head_threads
        cache = build_cache(weights, cfg, encoder_hidden, attention_mask, max_new_tokens, repeat=repeat)

        def step(tokens: Tensor, t: int) -> Tensor:
            nonlocal cache
            logits, cache = run_step(weights, cfg, cache, tokens[:, None], inplace=True, position=t)
            if on_step is not None:
                on_step()
            return logits[:, 0]  # (N, V)

        def reorder(source_rows: Tensor, t: int) -> None:
            # Beams move between rows of the same input only, so the cross K/V need no reordering.
            nonlocal cache
            cache = dataclasses.replace(cache, self_key=cache.self_key.index_select(1, source_rows),
                                        self_value=cache.self_value.index_select(1, source_rows))

        if beam_search:
            return beam_loop(step, reorder, cfg, spec, batch, num_beams, max_new_tokens, length_penalty,
                             early_stopping, num_return_sequences, generator, device)
        return sample_loop(step, cfg, spec, rows, max_new_tokens, generator, device)
