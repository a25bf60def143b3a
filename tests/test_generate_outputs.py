"""``generate``'s scores, prefixes, encoder outputs and ``stream`` on every weight layout and dtype.

The differential tests (``test_generate_hf.py``) run plain float32 trees. Here
the same calls run on ``prepare_decoding`` trees with every large-weight form
forced on (column blocks for one row, oneDNN-packed for several), whose first
step feeds a multi-token prefix through those forms, and on bfloat16
parameters: the ids are the plain tree's and the scores agree to round-off.
"""

from __future__ import annotations

import pytest
import torch

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=3, num_heads=4,
                      model_type="umt5", dropout_rate=0.0)


def _params(dtype=torch.float32):
    params = mt5fn.init_params(CFG, seed=2, dtype=dtype)
    params["lm_head"][CFG.eos_token_id] *= 2.0
    return params


def _inputs(batch: int):
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(2, 64, (batch, 6), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, 4:] = 0
    prefix = torch.randint(2, 64, (batch, 3), generator=generator)
    return ids, mask, prefix


@pytest.mark.parametrize("rows, kwargs", [
    (1, dict()), (1, dict(do_sample=True, top_k=10)), (3, dict()), (3, dict(num_beams=3, num_return_sequences=2)),
])
def test_prepared_layouts_decode_prefixes_as_plain_params(rows, kwargs):
    params = _params()
    batch = 1 if rows == 1 or kwargs.get("num_beams") else rows
    ids, mask, prefix = _inputs(batch)
    fast = mt5fn.prepare_decoding(params, CFG, rows=rows, min_numel=0)

    def run(tree, fn=mt5fn.generate, **extra):
        generator = torch.Generator().manual_seed(4)
        return fn(tree, CFG, ids, mask, max_new_tokens=7, decoder_input_ids=prefix, generator=generator,
                  **extra, **kwargs)

    plain, prepared = run(params, output_scores=True), run(fast, output_scores=True)
    assert torch.equal(prepared.sequences, plain.sequences)
    torch.testing.assert_close(prepared.scores, plain.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.sequences_scores, plain.sequences_scores, rtol=1e-5, atol=1e-5)
    if not kwargs.get("num_beams"):
        assert torch.equal(torch.stack(list(run(fast, mt5fn.stream)), 1), plain.sequences[:, 4:])


def test_bfloat16_scores_encoder_outputs_and_prefixes():
    params = _params(torch.bfloat16)
    ids, mask, prefix = _inputs(2)
    hidden = mt5fn.encode(params, CFG, ids, mask)
    assert hidden.dtype == torch.bfloat16
    out = mt5fn.generate(params, CFG, ids, mask, max_new_tokens=6, output_scores=True, decoder_input_ids=prefix)
    reused = mt5fn.generate(params, CFG, None, mask, max_new_tokens=6, output_scores=True, decoder_input_ids=prefix,
                            encoder_outputs=hidden)
    assert torch.equal(out.sequences, reused.sequences) and torch.equal(out.scores, reused.scores)
    assert out.scores.dtype == torch.float32 and (out.scores <= 0).all()
    assert torch.equal(out.sequences[:, 1:4], prefix)


def test_stream_can_stop_early_and_runs_lazily():
    params = _params()
    ids, mask, _ = _inputs(2)
    steps = mt5fn.stream(params, CFG, ids, mask, max_new_tokens=20, min_new_tokens=20)
    first = [next(steps) for _ in range(3)]
    steps.close()  # abandoning a stream releases it; nothing else to do
    full = mt5fn.generate(params, CFG, ids, mask, max_new_tokens=20, min_new_tokens=20)
    assert torch.equal(torch.stack(first, 1), full[:, 1:4])
