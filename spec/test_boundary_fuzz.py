"""One boundary, fuzzed: the public functions either work or refuse clearly.

Two invariants over the public boundary -- ``encode``, ``forward``, ``loss``,
``generate`` (and ``stream``), ``decode``, ``init_cache``, ``decode_step``, ``score``,
``intermediates``, ``MT5Config``, ``from_hf_state_dict`` and ``Tokenizer`` --
with the calls drawn by ``spec/malformed.py`` over plain, bfloat16, float16,
int8-quantized and ``prepare_decoding`` parameter trees:

1. **A malformed call raises ``ValueError`` or ``TypeError`` whose message
   names the argument** (or pytree path, config field, setting or file) that
   is wrong, and nothing else: no ``IndexError``, ``KeyError``,
   ``RuntimeError`` from a kernel, ``OverflowError``, ``MemoryError`` or
   allocation attempt, and never a silent success.
2. **A well-formed call never raises**, including at the edges of every
   documented range (int32 ids, bool / float masks, empty batches where the
   function takes them, ``temperature=1e-15``, ``length_penalty`` at its
   float32 bound).

Each malformed example breaks exactly one thing in an otherwise well-formed
call, so (1) and (2) together say the validation layer accepts exactly the
documented contract. The fuzz properties draw ten times the profile's
``max_examples`` (``ci``: 12 -> 120 per property; ``thorough``: 300 -> 3000).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from spec.malformed import (Call, malformed_configs, malformed_file_calls, malformed_model_calls,
                            malformed_state_dicts, malformed_tokenizer_calls, well_formed_calls,
                            well_formed_text_files, well_formed_tokenizer_calls)

EXAMPLES = settings().max_examples * 10


def assert_refused_clearly(call: Call, errors: tuple[type, ...] = (ValueError, TypeError)) -> None:
    """Invariant 1 for one call (``errors``: the classes a refusal may take)."""
    try:
        result = call.run()
    except errors as error:
        message = str(error)
        assert any(name in message for name in call.names), (
            f"{call!r} raised {type(error).__name__} without naming any of {call.names}: {message}")
        return
    except Exception as error:  # noqa: BLE001 -- the property is "nothing else"
        pytest.fail(f"{call!r} raised {type(error).__name__} (not ValueError / TypeError): {error}")
    pytest.fail(f"{call!r} was accepted (returned {type(result).__name__})")


def assert_works(call: Call) -> None:
    """Invariant 2 for one call: it returns (generate: a 2-D LongTensor of sequences)."""
    result = call.run()
    if call.target == "generate":
        sequences = result if isinstance(result, torch.Tensor) else result[0]  # output_scores: a triple
        assert sequences.dtype == torch.long and sequences.dim() == 2


@settings(max_examples=EXAMPLES)
@given(malformed_model_calls())
def test_malformed_model_and_decoding_calls_are_refused_clearly(call):
    """encode / decode / forward / loss / generate / stream / init_cache / decode_step / score / intermediates: a
    call with one defect (tensor dtype, rank, shape, range or batch; pytree part, key, shape, dtype or
    type; config; option; encoder output or decoder prefix; a buffer no machine holds) raises ValueError
    or TypeError naming the argument."""
    assert_refused_clearly(call)


@settings(max_examples=EXAMPLES)
@given(malformed_configs())
def test_malformed_configs_are_refused_clearly(call):
    """MT5Config: a wrong type, a value out of range, NaN / inf, or a degenerate combination in any one
    field raises ValueError or TypeError naming that field."""
    assert_refused_clearly(call)


@settings(max_examples=EXAMPLES)
@given(malformed_state_dicts())
def test_malformed_state_dicts_are_refused_clearly(call):
    """from_hf_state_dict: a missing, unexpected, mis-shaped, non-tensor or integer entry, or a non-mapping
    or a non-config, raises ValueError or TypeError naming state_dict (or cfg)."""
    assert_refused_clearly(call)


@settings(max_examples=EXAMPLES)
@given(malformed_tokenizer_calls())
def test_malformed_tokenizer_calls_are_refused_clearly(call):
    """Tokenizer: non-text or non-UTF-8 text, bad ids or options, corrupt model bytes or files raise
    ValueError or TypeError naming the argument (or the file)."""
    assert_refused_clearly(call)


@settings(max_examples=EXAMPLES)
@given(well_formed_calls())
def test_well_formed_calls_never_raise(call):
    """Every call that follows the documented contract returns, at the edges of every range too."""
    assert_works(call)


@settings(max_examples=EXAMPLES)
@given(well_formed_tokenizer_calls())
def test_well_formed_tokenizer_calls_never_raise(call):
    """Encoding any text without lone surrogates, with consistent options, and decoding valid ids returns."""
    call.run()


@settings(max_examples=EXAMPLES // 4, deadline=None)
@given(malformed_file_calls())
def test_malformed_files_outputs_encodings_and_work_are_refused_clearly(call):
    """Issue 21's classes: an adapter folder that links out of itself or holds a garbage pickle or deep /
    UTF-16 JSON; a file output onto a FIFO, a device or a directory (through a link too); a data file in
    UTF-16, UTF-32 or with a NUL byte; a beam search past MT5FN_MAX_WORK: ValueError, TypeError or OSError
    naming the file, output or bound."""
    assert_refused_clearly(call, (ValueError, TypeError, OSError))


@settings(max_examples=EXAMPLES // 4, deadline=None)
@given(well_formed_text_files())
def test_text_files_with_or_without_a_bom_read_the_same(call):
    """Every reader strips a UTF-8 byte order mark: the records are the lines, in order."""
    call.run()
