"""Bad input fails at the public function with a message naming the argument and value."""

from __future__ import annotations

import pytest
import torch

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
PARAMS = mt5fn.init_params(CFG)
IDS = torch.randint(0, 30, (2, 5))
DEC = torch.randint(0, 30, (2, 4))


@pytest.mark.parametrize("bad,value", [(30, "30"), (-1, "-1"), (10**6, "1000000")])
def test_ids_out_of_range(bad, value):
    ids = IDS.clone()
    ids[1, 3] = bad
    for call in (lambda: mt5fn.encode(PARAMS, CFG, ids),
                 lambda: mt5fn.forward(PARAMS, CFG, ids, DEC),
                 lambda: mt5fn.loss(PARAMS, CFG, ids, DEC)):
        with pytest.raises(ValueError, match=rf"input_ids must lie in \[0, vocab_size=30\).*got value {value}"):
            call()
    with pytest.raises(ValueError, match=f"decoder_input_ids .*got value {value}"):
        mt5fn.forward(PARAMS, CFG, IDS, ids)


def test_labels_accept_ignore_index_but_no_other_negative():
    labels = DEC.clone()
    labels[0, 2:] = -100
    mt5fn.loss(PARAMS, CFG, IDS, labels)
    labels[1, 0] = -5
    with pytest.raises(ValueError, match="labels .*-100.*got value -5"):
        mt5fn.loss(PARAMS, CFG, IDS, labels)


def test_float_and_misshaped_ids():
    with pytest.raises(TypeError, match="input_ids must hold integer token ids, got dtype torch.float32"):
        mt5fn.encode(PARAMS, CFG, IDS.float())
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor"):
        mt5fn.encode(PARAMS, CFG, [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, length\), got shape \(5,\)"):
        mt5fn.encode(PARAMS, CFG, IDS[0])
    with pytest.raises(ValueError, match="at least one token"):
        mt5fn.encode(PARAMS, CFG, IDS[:, :0])


def test_masks_must_match_their_ids():
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 5\), got shape \(2, 4\)"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"decoder_attention_mask .* got shape \(2, 5\)"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, decoder_attention_mask=torch.ones(2, 5))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        mt5fn.encode(PARAMS, CFG, IDS, attention_mask=[[1] * 5] * 2)


def test_batch_sizes_must_agree():
    with pytest.raises(ValueError, match="decoder_input_ids has batch size 3 but input_ids has 2"):
        mt5fn.forward(PARAMS, CFG, IDS, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has batch size 1 but input_ids has 2"):
        mt5fn.loss(PARAMS, CFG, IDS, DEC[:1])


def test_config_and_params_types():
    with pytest.raises(TypeError, match="cfg must be an MT5Config, got dict"):
        mt5fn.forward(PARAMS, {"d_model": 8}, IDS, DEC)
    with pytest.raises(TypeError, match="params must be the mt5fn parameter pytree"):
        mt5fn.forward([], CFG, IDS, DEC)
    with pytest.raises(ValueError, match="dropout_rate must be a float in \\[0, 1\\), got 1.5"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, dropout_rate=1.5)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'none'"):
        mt5fn.loss(PARAMS, CFG, IDS, DEC, reduction="none")


def test_validation_stays_out_of_transforms():
    # Value checks must not call bool() on traced tensors: grad and vmap over params work.
    grads = torch.func.grad(mt5fn.loss)(PARAMS, CFG, IDS, DEC)
    assert grads["shared"].shape == PARAMS["shared"].shape
    stacked = mt5fn.tree_map(lambda t: torch.stack([t, t]), PARAMS)
    logits = torch.func.vmap(mt5fn.forward, in_dims=(0, None, None, None))(stacked, CFG, IDS, DEC)
    assert logits.shape == (2, 2, 4, 30)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.float16, torch.bool])
def test_ids_of_other_dtypes_are_refused_not_passed_to_embedding(dtype):
    # int32 works as int64 does; other integer dtypes used to pass the check and fail inside embedding.
    assert torch.equal(mt5fn.encode(PARAMS, CFG, IDS.int()), mt5fn.encode(PARAMS, CFG, IDS))
    with pytest.raises(TypeError, match=f"input_ids must hold .*got dtype {dtype}"):
        mt5fn.encode(PARAMS, CFG, IDS.to(dtype))
    with pytest.raises(TypeError, match=f"labels must hold .*got dtype {dtype}"):
        mt5fn.loss(PARAMS, CFG, IDS, DEC.to(dtype))


def test_params_missing_a_part_or_of_the_wrong_dtype():
    with pytest.raises(ValueError, match=r"params is missing \['encoder'\]"):
        mt5fn.encode({"shared": PARAMS["shared"]}, CFG, IDS)
    with pytest.raises(ValueError, match=r"params is missing \['shared'\]"):
        mt5fn.encode({"encoder": PARAMS["encoder"]}, CFG, IDS)
    with pytest.raises(ValueError, match="this function needs the decoder"):
        mt5fn.forward({"shared": PARAMS["shared"], "encoder": PARAMS["encoder"]}, CFG, IDS, DEC)
    as_int = mt5fn.tree_map(lambda t: t.long(), PARAMS)
    with pytest.raises(TypeError, match="params: shared has dtype torch.int64; parameters are floating"):
        mt5fn.encode(as_int, CFG, IDS)
    mixed = mt5fn.tree_map(lambda t: t, PARAMS)
    mixed["encoder"]["final_norm"] = mixed["encoder"]["final_norm"].half()
    with pytest.raises(TypeError, match="params: encoder.final_norm has dtype torch.float16 but the embedding"):
        mt5fn.encode(mixed, CFG, IDS)
    # transformers' float16 layout -- every FFN wo in float32 -- is accepted and runs
    half = mt5fn.init_params(CFG, dtype=torch.float16)
    assert half["encoder"]["blocks"][0]["mlp"]["wo"].dtype == torch.float32
    assert mt5fn.forward(half, CFG, IDS, DEC).shape == (2, 4, 30)


def test_encoder_hidden_must_match_the_parameters():
    hidden = mt5fn.encode(PARAMS, CFG, IDS)
    with pytest.raises(TypeError, match="encoder_hidden has dtype torch.float64 but the parameters have torch.float32"):
        mt5fn.decode(PARAMS, CFG, DEC, hidden.double())
    with pytest.raises(TypeError, match="encoder_hidden must be a floating tensor"):
        mt5fn.init_cache(PARAMS, CFG, hidden.long(), None, 4)
    with pytest.raises(ValueError, match="encoder_hidden must hold at least one position"):
        mt5fn.init_cache(PARAMS, CFG, hidden[:, :0], None, 4)


def test_a_cache_that_does_not_fit_the_parameters():
    import dataclasses

    cache = mt5fn.init_cache(PARAMS, CFG, mt5fn.encode(PARAMS, CFG, IDS), None, 4)
    wide = dataclasses.replace(cache, self_key=cache.self_key.double(), self_value=cache.self_value.double())
    with pytest.raises(TypeError, match="cache.self_key has dtype torch.float64 but the parameters have torch.float32"):
        mt5fn.decode_step(PARAMS, CFG, wide, DEC[:, :1])
    flat = dataclasses.replace(cache, self_key=cache.self_key[0], self_value=cache.self_value[0])
    with pytest.raises(ValueError, match=r"cache.self_key must have shape \(layers, batch, heads, length, d_kv\)"):
        mt5fn.decode_step(PARAMS, CFG, flat, DEC[:, :1])
    with pytest.raises(ValueError, match="inplace must be a bool"):
        mt5fn.decode_step(PARAMS, CFG, cache, DEC[:, :1], inplace="yes")


@pytest.mark.parametrize("settings,message", [
    # each used to crash: NaN probabilities in multinomial, or OverflowError from length ** penalty
    (dict(do_sample=True, temperature=1e-45), r"temperature must lie in \[1e-15, 1e\+15\]"),
    (dict(repetition_penalty=1e-300), r"repetition_penalty must lie in \[1e-15, 1e\+15\]"),
    (dict(repetition_penalty=1e300), r"repetition_penalty must lie in"),
    (dict(num_beams=2, length_penalty=5000.0), r"length_penalty must lie in \[-55.13, 55.13\] for max_new_tokens=5"),
    (dict(num_beams=2, length_penalty=-5000.0), r"length_penalty must lie in"),
])
def test_extreme_but_finite_generation_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=5, **settings)


def test_edges_of_the_generation_ranges_work():
    generator = torch.Generator().manual_seed(0)
    for settings in (dict(do_sample=True, temperature=1e-15, repetition_penalty=1e-15, generator=generator),
                     dict(do_sample=True, temperature=1e15, repetition_penalty=1e15, generator=generator),
                     dict(num_beams=3, length_penalty=55.0, early_stopping="never"),
                     dict(num_beams=3, length_penalty=-55.0)):
        out = mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=5, **settings)
        assert out.shape[0] == 2 and out.dtype == torch.long


def test_an_empty_batch_is_refused_by_generate():
    for beams in (1, 2):
        with pytest.raises(ValueError, match=r"input_ids must hold at least one row .*got shape \(0, 5\)"):
            mt5fn.generate(PARAMS, CFG, IDS[:0], max_new_tokens=3, num_beams=beams)
    # the teacher-forced functions take an empty batch
    assert mt5fn.encode(PARAMS, CFG, IDS[:0]).shape == (0, 5, 8)
    assert mt5fn.forward(PARAMS, CFG, IDS[:0], DEC[:0]).shape == (0, 4, 30)


def test_seeds_and_devices_are_checked_up_front():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 18446744073709551615\], got 2\*\*70|seed must be"):
        mt5fn.init_params(CFG, seed=2 ** 70)
    with pytest.raises(ValueError, match="device: 'gpu' is not a torch device"):
        mt5fn.init_params(CFG, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: device 'cuda' cannot be used"):
            mt5fn.init_params(CFG, device="cuda")


def test_int32_labels_work_on_every_loss_path():
    # Found by the boundary fuzz: the unfused path (vmap, quantized heads, empty batches) handed int32
    # labels to F.cross_entropy, which takes int64 only.
    stacked = mt5fn.tree_map(lambda t: torch.stack([t, t]), PARAMS)
    batched = torch.func.vmap(mt5fn.loss, in_dims=(0, None, None, None))
    assert torch.equal(batched(stacked, CFG, IDS, DEC.int()), batched(stacked, CFG, IDS, DEC))
    assert torch.isnan(mt5fn.loss(PARAMS, CFG, IDS[:0].int(), DEC[:0].int()))  # a mean over no tokens


def test_half_umt5_with_dropout_and_observers():
    # Found by the boundary fuzz: UMT5's later blocks make their position bias in the float32 residual
    # stream of a half model (FFN wo kept in float32); the plain-softmax path added it to half scores.
    cfg = CFG.replace(model_type="umt5", num_layers=2, num_decoder_layers=2)
    params = mt5fn.init_params(cfg, dtype=torch.float16)
    generator = torch.Generator().manual_seed(0)
    assert torch.isfinite(mt5fn.loss(params, cfg, IDS, DEC, dropout_rate=0.1, generator=generator))
    acts = mt5fn.intermediates(params, cfg, IDS, DEC)
    assert acts["logits"].shape == (2, 4, 30)
