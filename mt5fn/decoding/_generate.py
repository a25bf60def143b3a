"""``generate``: greedy, sampling and beam-search decoding for the T5 family.

The input is encoded once (or its encoder output is passed in, ``encoder_outputs``);
the decoder then runs one cached step per token (``_cache.step_hidden``, i.e.
``functional.decoder_block`` with the cache as an argument) on a
``prepare_decoding`` tree, writing its K/V cache in place. The first step
feeds the whole decoder prefix -- the start token, or a forced
``decoder_input_ids`` prefix -- as one cached chunk. Token choice lives in
``_sampling`` (greedy / sampling) and ``_beam_search``; score processing in
``_logits_processors``. The output layout is transformers': the decoder
prefix first, then the generated tokens, ``pad_token_id`` after a row's EOS,
and only as many columns as the longest row needs.

With ``output_scores`` the result is a ``GenerateOutput`` (``sequences``,
``scores``, ``sequences_scores``):

* greedy / sampling: ``scores[n, t]`` is the log-probability of the t-th
  generated token under the processed distribution the token was chosen from
  (after the repetition penalty, n-gram ban, minimum length, temperature,
  top-k, top-p): transformers' ``compute_transition_scores(sequences,
  scores, normalize_logits=True)``; 0 after a row's EOS. ``sequences_scores``
  is their sum: the row's log-probability under those distributions (no
  length penalty).
* beam search: ``scores[n, t]`` is the processed log-probability that token
  added to the hypothesis' beam score (transformers'
  ``compute_transition_scores(sequences, scores, beam_indices)``), 0 after
  its end; ``sequences_scores`` is the final beam score, ``sum(scores) /
  generated_length ** length_penalty``: transformers' ``sequences_scores``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from .. import checks as check
from ..checks import preflight
from ..kernels import box_onednn_leaves
from ..model import MT5Config, check_config, lm_logits
from ..model import run_encoder as encode  # the encoder without its checks: generate validated once
from ._beam_search import Reorder, beam_loop
from ._cache import build_cache, distance_bias, step_hidden
from ._compiled import (backend_of, cannot_compile, compiled_step, failure_key, known_failure,
                        remember_failure, slots_for)
from ._generation_config import GenerationConfig
from ._logits_processors import Processing
from ._prepare import is_prepared, lay_out, one_call_min_numel
from ._sampling import Step, sample_loop
from ._threads import StepThreads, intra_op_threads, loop_threads

# The encoder of an input this large (batch x tokens) runs on all of torch's threads: its products
# are big enough to split. Below it, a parallel region costs more than it saves (see loop_threads).
_ENCODER_ROWS_FOR_ALL_THREADS = 256


class GenerateOutput(NamedTuple):
    """What ``generate(..., output_scores=True)`` returns (see the module docstring)."""

    sequences: Tensor  # (N, P + generated) ids, P = decoder prefix length (1: the start token)
    scores: Tensor  # (N, generated) float32 log-probability of each generated token, 0 after EOS
    sequences_scores: Tensor  # (N,) float32


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
        eos_token_id=cfg.eos_token_ids, min_new_tokens=gc.min_new_tokens, repetition_penalty=gc.repetition_penalty,
        no_repeat_ngram_size=gc.no_repeat_ngram_size, do_sample=gc.do_sample, temperature=gc.temperature,
        top_k=gc.top_k, top_p=gc.top_p, min_tokens_to_keep=2 if gc.num_beams > 1 else 1)


def _check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def check_source(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None,
                 encoder_outputs: Tensor | None) -> Tensor:
    """Validate the source side; returns a (B, S) tensor of its shape (the ids, or a view of the
    encoder output) for the checks that follow."""
    device = check.params_device(params)
    if encoder_outputs is None:
        if input_ids is None:
            raise ValueError("input_ids must be given (or the encoder output as encoder_outputs=), got None")
        check.check_ids("input_ids", input_ids, cfg, min_batch=1, device=device)
        check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
        return input_ids
    check.check_hidden("encoder_outputs", encoder_outputs, cfg, params)
    if encoder_outputs.shape[0] == 0:
        raise ValueError(f"encoder_outputs must hold at least one row, got shape {tuple(encoder_outputs.shape)}")
    source = encoder_outputs[..., 0]  # (B, S)
    if input_ids is not None:
        check.check_ids("input_ids", input_ids, cfg, min_batch=1, device=device)
        if tuple(input_ids.shape) != tuple(source.shape):
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)} but encoder_outputs has (batch, length) "
                             f"{tuple(source.shape)}; pass the ids the encoder output was computed from, or None")
    check.check_mask("attention_mask", attention_mask, source, "encoder_outputs[..., 0]")
    return source


def decoder_prefix(cfg: MT5Config, decoder_input_ids: Tensor | None, batch: int,
                   device: torch.device) -> Tensor:
    """The (B, P) decoder ids every row starts from, as transformers forms them: the start token alone,
    or ``decoder_input_ids`` with ``decoder_start_token_id`` put in front when no row begins with it."""
    start = cfg.decoder_start_token_id
    if decoder_input_ids is None:
        return torch.full((batch, 1), start, dtype=torch.long, device=device)
    check.check_ids("decoder_input_ids", decoder_input_ids, cfg, device=device)
    if decoder_input_ids.shape[0] != batch:
        raise ValueError(f"decoder_input_ids has batch size {decoder_input_ids.shape[0]} but the input has {batch} "
                         "(one prefix per input; beams and returned sequences repeat it)")
    ids = decoder_input_ids.long()
    starts = ids[:, 0] == start
    if not bool(starts.any()):
        return torch.cat([torch.full((batch, 1), start, dtype=torch.long, device=device), ids], dim=1)
    if not bool(starts.all()):
        rows = torch.nonzero(~starts)[:, 0].tolist()
        raise ValueError(f"decoder_input_ids: some rows begin with decoder_start_token_id={start} and rows {rows} "
                         "do not; give it in front of every row or of none (then it is added)")
    return ids


@dataclasses.dataclass(frozen=True)
class Request:
    """One validated decoding call."""

    gc: GenerationConfig
    prefix: Tensor  # (B, P)
    batch: int
    backend: str | None  # compile=: the torch.compile backend, or None (eager)


def validate(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None,
             config: GenerationConfig | None, generator: Any, encoder_outputs: Tensor | None,
             decoder_input_ids: Tensor | None, overrides: dict[str, Any], compile: Any = False) -> Request:
    """Every check of ``generate`` / ``stream``, before any work."""
    check_config(cfg)
    check.check_params(params, cfg, need_decoder=True, differentiates=False)  # decodes under inference_mode
    source = check_source(params, cfg, input_ids, attention_mask, encoder_outputs)
    gc = resolve_config(config, overrides)
    _check_generator(generator)
    prefix = decoder_prefix(cfg, decoder_input_ids, source.shape[0], check.params_device(params))
    backend = None if compile is False else backend_of(compile)
    return Request(gc, prefix, source.shape[0], backend)


def generate(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None = None,
             config: GenerationConfig | None = None, *, generator: torch.Generator | None = None,
             encoder_outputs: Tensor | None = None, decoder_input_ids: Tensor | None = None,
             compile: bool | str = False, **overrides: Any) -> Tensor | GenerateOutput:
    """Decode continuations of ``input_ids`` (B, S); returns (B * num_return_sequences, P + n) token ids.

    The settings are ``config`` (a ``GenerationConfig``) with keyword
    ``overrides`` of its fields (``max_new_tokens=32, num_beams=4``, ...);
    sampling draws from ``generator``. Each row starts with the decoder prefix
    -- ``decoder_start_token_id`` (P = 1), or ``decoder_input_ids`` (B, P0)
    forced as transformers forces it (the start token is put in front when no
    row begins with it) -- followed by at most ``max_new_tokens`` generated
    tokens; rows end at EOS and are padded with ``pad_token_id``; there are
    as few columns as the longest row needs.

    ``encoder_outputs`` (B, S, d_model), e.g. ``mt5fn.encode(...)``, is used
    instead of encoding again (``input_ids`` may then be None; the encoder's
    ``attention_mask`` still masks the source). ``output_scores=True``
    returns a ``GenerateOutput`` (module docstring).

    ``params`` may be a ``prepare_decoding`` tree: hold one for repeated
    calls. Plain parameters are prepared for this call alone (the cost is in
    docs/generation.md's table) and nothing is remembered afterwards.

    ``compile=True`` runs each decoding step through ``torch.compile`` with a
    static cache (``_compiled``; ``"aot_eager"`` / ``"eager"`` name a backend
    that captures the graph without generating code). Same tokens; where
    torch cannot compile, one warning names the reason and decoding is eager.
    """
    request = validate(params, cfg, input_ids, attention_mask, config, generator, encoder_outputs,
                       decoder_input_ids, overrides, compile)
    return decode_tokens(params, cfg, input_ids, attention_mask, request.gc, generator=generator,
                         encoder_outputs=encoder_outputs, prefix=request.prefix, backend=request.backend)


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A started decoding: ``step`` feeds new ids (N, T) and returns the next-token logits (N, V);
    ``reorder`` moves rows (beam search); the loop runs on ``step_threads`` intra-op threads."""

    step: Step
    reorder: Reorder
    step_threads: int


def _usable_backend(backend: str | None, device: torch.device) -> str | None:
    """``backend`` if the step can be compiled here, else None after one warning naming the reason."""
    if backend is None:
        return None
    reason = cannot_compile(backend, device)
    if reason is not None:
        warnings.warn(f"generate(compile=...): {reason}; decoding eagerly", stacklevel=5)
        return None
    return backend


def _is_compile_failure(error: Exception) -> bool:
    """An error raised by torch's compiler stack (dynamo, a backend), not by the step's own checks."""
    module = type(error).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or \
        isinstance(error, (torch._dynamo.exc.BackendCompilerFailed, torch._dynamo.exc.Unsupported))


def start_decoding(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None,
                   gc: GenerationConfig, *, repeat: int, prefix_length: int, encoder_outputs: Tensor | None = None,
                   on_step: Callable[[], None] | None = None, backend: str | None = None) -> Decoder:
    """Encode (unless ``encoder_outputs``), lay out the weights and build the cache for rows repeated
    ``repeat`` times; ``backend``: compile the step (``_compiled``). Call under ``torch.inference_mode()``."""
    all_threads = torch.get_num_threads()
    step_threads = loop_threads() or 1  # the loop's own work (token choice, cache moves); StepThreads below
    if encoder_outputs is None:
        encoder_threads = all_threads if input_ids.numel() >= _ENCODER_ROWS_FOR_ALL_THREADS else step_threads
        with intra_op_threads(encoder_threads):
            encoder_hidden = encode(params, cfg, input_ids, attention_mask)  # (B, S, d)
    else:
        encoder_hidden = encoder_outputs
    rows = encoder_hidden.shape[0] * repeat
    slots = prefix_length - 1 + gc.max_new_tokens  # ids fed: the prefix, then all generated tokens but the last
    backend = _usable_backend(backend, encoder_hidden.device)
    # Laying out the weights is a few large copies and the cross K/V one large product: every thread.
    # Compiled or not, the products run the forms the kernel choice measured fastest here (under a
    # compiler the packed ones are opaque operators, _compiled).
    weights = params if is_prepared(params) else lay_out(params, rows, one_call_min_numel(rows, gc.max_new_tokens))
    if backend is not None:
        slots = slots_for(slots)  # a slot count shared by many calls: one graph
        boxed_weights = box_onednn_leaves(weights)  # leaves the compiler can tell apart (kernels._opaque)
        failure = failure_key(backend, encoder_hidden.device, cfg, boxed_weights)
        if (reason := known_failure(failure)) is not None:  # tracing again would fail again, seconds later
            warnings.warn(f"generate(compile=...): torch.compile failed on this step before ({reason}); "
                          f"decoding eagerly", stacklevel=4)
            backend = None
    cache = build_cache(weights, cfg, encoder_hidden, attention_mask, slots, repeat=repeat)
    with intra_op_threads(step_threads):
        distances = distance_bias(weights, cfg, slots)
    position = 0

    block_threads = StepThreads(all_threads)

    def eager_step(tokens: Tensor) -> Tensor:
        nonlocal cache
        threads, start = block_threads.next(), time.perf_counter()
        with intra_op_threads(threads):
            hidden, cache = step_hidden(weights, cfg, cache, tokens, inplace=True, position=position,
                                        distances=distances)  # (N, T, d)
        block_threads.record(threads, time.perf_counter() - start)
        with intra_op_threads(all_threads):
            return lm_logits(weights, cfg, hidden[:, -1:])[:, 0]  # (N, V)

    def compiled(tokens: Tensor) -> Tensor:
        nonlocal cache, backend
        try:
            with intra_op_threads(all_threads):  # one graph, the head included: every thread
                logits, cache = compiled_step(backend, encoder_hidden.device)(boxed_weights, cfg, cache,
                                                                              tokens.contiguous())
            return logits  # (N, V)
        except Exception as error:  # noqa: BLE001 -- any compiler failure: say why once, then decode eagerly
            if not _is_compile_failure(error):
                raise
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            remember_failure(failure, reason)
            warnings.warn(f"generate(compile=...): torch.compile failed ({reason}); decoding eagerly", stacklevel=4)
            backend = None
            return eager_step(tokens)

    def step(tokens: Tensor) -> Tensor:
        nonlocal position
        logits = eager_step(tokens) if backend is None else compiled(tokens)
        position += tokens.shape[1]
        if on_step is not None:
            on_step()
        return logits  # (N, V)

    def reorder(source_rows: Tensor) -> None:
        # Beams move between rows of the same input only, so the cross K/V need no reordering.
        nonlocal cache
        cache = dataclasses.replace(cache, self_key=cache.self_key.index_select(1, source_rows),
                                    self_value=cache.self_value.index_select(1, source_rows))

    return Decoder(step, reorder, step_threads)


def decode_tokens(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None,
                  gc: GenerationConfig, *, generator: torch.Generator | None = None,
                  beam_search: bool | None = None, on_step: Callable[[], None] | None = None,
                  encoder_outputs: Tensor | None = None, prefix: Tensor | None = None,
                  backend: str | None = None) -> Tensor | GenerateOutput:
    """``generate`` after validation. ``beam_search`` forces the loop (None: beams when ``num_beams > 1``),
    so one-beam beam search stays reachable for the specification; ``on_step`` is called after every
    decoder step (the command line's profiler); ``prefix``: ``decoder_prefix``'s (B, P) ids."""
    beam_search = gc.num_beams > 1 if beam_search is None else beam_search
    source = input_ids if encoder_outputs is None else encoder_outputs[..., 0]  # (B, S)
    preflight.check_generate(params, cfg, source, attention_mask, max_new_tokens=gc.max_new_tokens,
                             num_beams=gc.num_beams, num_return_sequences=gc.num_return_sequences,
                             beam_search=beam_search)
    batch = source.shape[0]
    if prefix is None:
        prefix = decoder_prefix(cfg, None, batch, source.device)
    repeat = gc.num_beams if beam_search else gc.num_return_sequences
    spec = processing(cfg, gc)
    with torch.inference_mode():
        decoder = start_decoding(params, cfg, input_ids, attention_mask, gc, repeat=repeat,
                                 prefix_length=prefix.shape[1], encoder_outputs=encoder_outputs, on_step=on_step,
                                 backend=backend)
        with intra_op_threads(decoder.step_threads):
            if beam_search:
                result = beam_loop(decoder.step, decoder.reorder, cfg, spec, prefix, gc.num_beams,
                                   gc.max_new_tokens, gc.length_penalty, gc.early_stopping, gc.num_return_sequences,
                                   generator, output_scores=gc.output_scores)
                return GenerateOutput(*result) if gc.output_scores else result.sequences
            sequences, scores = sample_loop(decoder.step, cfg, spec, prefix.repeat_interleave(repeat, dim=0),
                                            gc.max_new_tokens, generator, output_scores=gc.output_scores)
            if gc.output_scores:
                return GenerateOutput(sequences, scores, scores.sum(dim=1))
            return sequences
