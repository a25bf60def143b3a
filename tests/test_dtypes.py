"""Half precision: float16 follows transformers (clamping included), bfloat16 works."""

from __future__ import annotations

import torch

import mt5fn
from reference import hf_model

CFG = mt5fn.MT5Config(model_type="mt5", vocab_size=60, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_decoder_layers=2, num_heads=4)
IDS = torch.randint(0, 60, (2, 11), generator=torch.Generator().manual_seed(0))
DEC = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(1))
MASK = torch.tensor([[1] * 11, [1] * 8 + [0] * 3])


def test_float16_matches_transformers_float16():
    params = mt5fn.init_params(CFG, seed=0)
    model = hf_model(CFG, params).half()
    half = mt5fn.tree_map(lambda t: t.half(), params)
    with torch.no_grad():
        ref = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
        ours = mt5fn.forward(half, CFG, IDS, DEC, MASK)
        full = mt5fn.forward(params, CFG, IDS, DEC, MASK)
    assert ours.dtype == torch.float16
    # Same float16 arithmetic up to kernel accumulation order: far closer to transformers than to float32.
    torch.testing.assert_close(ours.float(), ref.float(), atol=2e-2, rtol=1e-2)
    assert (ours.float() - full).abs().max() < 0.2


def test_float16_clamps_overflow_like_transformers():
    params = mt5fn.init_params(CFG, seed=0)
    # Blow up one FFN output so float16 overflows inside the encoder.
    params["encoder"]["blocks"][0]["mlp"]["wo"] = params["encoder"]["blocks"][0]["mlp"]["wo"] * 3e4
    model = hf_model(CFG, params).half()
    half = mt5fn.tree_map(lambda t: t.half(), params)
    with torch.no_grad():
        ref = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC)
        hidden = mt5fn.encode(half, CFG, IDS, MASK)
    assert torch.isfinite(hidden).all()
    torch.testing.assert_close(hidden.float(), ref.encoder_last_hidden_state.float(), atol=2e-2, rtol=1e-2)


def test_bfloat16_runs_and_stays_close_to_float32():
    params = mt5fn.init_params(CFG, seed=1)
    bf16 = mt5fn.tree_map(lambda t: t.bfloat16(), params)
    logits = mt5fn.forward(bf16, CFG, IDS, DEC, MASK)
    assert logits.dtype == torch.bfloat16
    reference = mt5fn.forward(params, CFG, IDS, DEC, MASK)
    assert (logits.float() - reference).abs().max() < 0.15 * reference.abs().max()
    loss = mt5fn.loss(bf16, CFG, IDS, DEC, MASK)
    grads = torch.func.grad(mt5fn.loss)(bf16, CFG, IDS, DEC, MASK)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert grads["shared"].dtype == torch.bfloat16 and torch.isfinite(grads["shared"]).all()
