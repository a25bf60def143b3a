"""int8 and bfloat16 weights: the same block functions, the same tokens as teacher forcing on the same
weights, clear errors for what a quantized tree cannot do, and loading straight into int8."""

from __future__ import annotations

import pytest
import torch

import mt5fn
from mt5fn.functional import linear, linear_form
from mt5fn.quant import int8_compute_dtype, is_quantized, quantize_weight

# d_model and d_ff multiples of 16 reach torch._weight_int8pack_mm; the odd config takes the fallback.
CONFIGS = {
    "mt5": mt5fn.MT5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, model_type="mt5"),
    "t5-tied": mt5fn.MT5Config(vocab_size=80, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=2,
                               num_heads=2, model_type="t5", feed_forward_proj="relu", tie_word_embeddings=True),
    "umt5-odd": mt5fn.MT5Config(vocab_size=70, d_model=20, d_kv=6, d_ff=30, num_layers=2, num_heads=3,
                                model_type="umt5"),
}
IDS = torch.randint(2, 70, (3, 7), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])


def _check_greedy_against_teacher_forcing(tree: dict, cfg: mt5fn.MT5Config, out: torch.Tensor) -> None:
    """Every token ``generate`` chose is the arg-max of ``forward``'s logits on the same weights and prefix.

    In bf16 compute (bf16 weights, and int8 weights with bf16 scales) the cached step (a few rows) and
    teacher forcing (B*T rows) run different kernels whose bf16 rounding differs (~2^-8 relative), so a
    near-tie may resolve either way: where forward's top two logits are closer than that round-off the
    chosen token must be within it of the maximum; everywhere else it must be the arg-max exactly.
    """
    with torch.inference_mode():
        logits = mt5fn.forward(tree, cfg, IDS, out[:, :-1], MASK).float()  # (B, T, V)
    top2 = logits.topk(2, dim=-1).values  # (B, T, 2)
    scale = logits.abs().amax(dim=-1)  # (B, T)
    round_off = 2.0 ** -7 * scale  # a few bf16 ulps of the largest logit
    chosen = out[:, 1:]
    finished = torch.zeros(out.shape[0], dtype=torch.bool)
    for t in range(chosen.shape[1]):
        live = ~finished
        picked = logits[:, t].gather(1, chosen[:, t:t + 1])[:, 0]
        clear = (top2[:, t, 0] - top2[:, t, 1]) > 2 * round_off[:, t]
        exact = live & clear
        assert torch.equal(chosen[exact, t], logits[exact, t].argmax(-1)), t
        assert (picked[live] >= top2[live, t, 0] - 2 * round_off[live, t]).all(), t
        finished |= chosen[:, t] == cfg.eos_token_id


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind", ["int8", "bf16", "int8-prepared", "bf16-prepared"])
def test_generate_equals_teacher_forcing_on_the_same_weights(name, kind):
    cfg = CONFIGS[name]
    params = mt5fn.init_params(cfg, seed=1)
    tree = mt5fn.quantize(params, cfg, "int8") if kind.startswith("int8") else \
        mt5fn.tree_map(lambda t: t.to(torch.bfloat16), params)
    if kind.endswith("prepared"):
        tree = mt5fn.prepare_decoding(tree, cfg, rows=IDS.shape[0], min_numel=0)
    out = mt5fn.generate(tree, cfg, IDS, MASK, max_new_tokens=8)
    _check_greedy_against_teacher_forcing(tree, cfg, out)


def test_int8_float32_compute_is_exactly_teacher_forcing():
    """With float32 scales (the compute dtype of CPUs without bf16) there is no bf16 rounding: the
    generated tokens are teacher forcing's exactly."""
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=1)
    tree = mt5fn.quant._int8._map_projections(params, lambda path, w: quantize_weight(w, torch.float32))
    out = mt5fn.generate(tree, cfg, IDS, MASK, max_new_tokens=8)
    with torch.inference_mode():
        prefix = torch.full((IDS.shape[0], 1), cfg.decoder_start_token_id)
        for t in range(out.shape[1] - 1):
            nxt = mt5fn.forward(tree, cfg, IDS, prefix, MASK)[:, -1].argmax(-1)
            nxt = torch.where(out[:, t] == cfg.eos_token_id, cfg.pad_token_id, nxt) if t else nxt
            prefix = torch.cat([prefix, out[:, t + 1:t + 2]], 1)
            alive = (out[:, 1:t + 1] != cfg.eos_token_id).all(1) if t else torch.ones(IDS.shape[0], dtype=bool)
            assert torch.equal(out[alive, t + 1], nxt[alive]), t


def test_int8_forms_and_what_stays_float():
    cfg = CONFIGS["t5-tied"]
    params = mt5fn.init_params(cfg, seed=0)
    q = mt5fn.quantize(params, cfg)
    assert is_quantized(q) and not is_quantized(params)
    assert q["shared"] is params["shared"]  # the embedding stays float
    assert linear_form(q["lm_head"]) == "int8"  # the tied head is read as an int8 projection
    block = q["decoder"]["blocks"][0]
    assert block["self_attn_norm"] is params["decoder"]["blocks"][0]["self_attn_norm"]
    assert q["decoder"]["rel_bias"] is params["decoder"]["rel_bias"]
    for key in ("q", "k", "v", "o"):
        assert linear_form(block["cross_attn"][key]) == "int8"
    assert block["mlp"]["wi"]["scale"].dtype == int8_compute_dtype()


def test_quantize_weight_error_is_half_a_step_per_channel():
    weight = torch.randn(33, 48) * torch.logspace(-2, 2, 33)[:, None]  # rows of very different scales
    form = quantize_weight(weight, torch.float32)
    restored = form["int8"].float() * form["scale"][:, None]
    assert ((restored - weight).abs() <= form["scale"][:, None] / 2 + 1e-7).all()
    x = torch.randn(5, 48)
    torch.testing.assert_close(linear(x, form), x @ restored.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4, 40])
def test_int8_linear_kernels_agree(rows):
    """The int8pack kernel (few rows, bf16) and the dequantize fallback compute the same product, up to
    bfloat16 round-off (2^-8 relative to the output's scale; the fallback also rounds W to bf16)."""
    weight = torch.randn(64, 32)
    form = quantize_weight(weight, torch.bfloat16)
    x = torch.randn(rows, 32)
    expected = x.bfloat16().float() @ (form["int8"].float() * form["scale"].float()[:, None]).t()
    bf16_round_off = 2.0 ** -8 * expected.abs().max().item()
    torch.testing.assert_close(linear(x, form), expected, rtol=0, atol=2 * bf16_round_off)
    assert linear(x, form).dtype == torch.float32


def test_quantize_bad_input_names_the_leaf():
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    q = mt5fn.quantize(params, cfg)
    with pytest.raises(ValueError, match=r"params: encoder\.blocks\.0\.attn\.q is already quantized"):
        mt5fn.quantize(q, cfg)
    with pytest.raises(ValueError, match=r"scheme must be one of \('int8',\), got 'int4'"):
        mt5fn.quantize(params, cfg, "int4")
    scale = q["decoder"]["blocks"][1]["mlp"]["wo"]["scale"]
    q["decoder"]["blocks"][1]["mlp"]["wo"]["scale"] = scale.float().requires_grad_()
    with pytest.raises(TypeError, match=r"params: decoder\.blocks\.1\.mlp\.wo is an int8 weight leaf"):
        mt5fn.loss(q, cfg, IDS, IDS)


def test_dequantize_is_the_weights_the_forms_stand_for():
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    q = mt5fn.quantize(params, cfg)
    back = mt5fn.dequantize(q, cfg)
    dec = IDS[:, :4]
    expected = mt5fn.forward(q, cfg, IDS, dec)
    # the same weights; the two differ by the compute dtype's round-off of activations (bf16 here)
    round_off = 2.0 ** -6 * expected.abs().max().item()
    torch.testing.assert_close(mt5fn.forward(back, cfg, IDS, dec), expected, rtol=0, atol=round_off)
    wq = back["encoder"]["blocks"][0]["attn"]["q"]
    assert wq.shape == params["encoder"]["blocks"][0]["attn"]["q"].shape and wq.dtype == torch.float32


@pytest.mark.parametrize("name", ["mt5", "t5-tied"])
def test_load_pretrained_quantize_equals_quantize(tmp_path, name):
    """The documented save/load of an int8 model: save the float weights, re-quantize on load
    (deterministic, tensor by tensor), and get exactly ``quantize`` of the loaded float tree."""
    cfg = CONFIGS[name]
    params = mt5fn.init_params(cfg, seed=0)
    mt5fn.save_pretrained(params, cfg, tmp_path / "m")
    _, loaded = mt5fn.load_pretrained(tmp_path / "m", quantize="int8")
    expected = mt5fn.quantize(params, cfg)
    flat_loaded, flat_expected = mt5fn.flatten_params(loaded), mt5fn.flatten_params(expected)
    assert flat_loaded.keys() == flat_expected.keys()
    for path, leaf in flat_expected.items():
        assert torch.equal(flat_loaded[path], leaf), path
