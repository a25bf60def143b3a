"""Single weight files as diffusion tools ship T5 text encoders, float8 included.

``load_pretrained("t5xxl_fp16.safetensors")``: transformers' names with or
without ``encoder.``, a bundle prefix, full models; the config inferred from
the shapes (a warning names what was assumed) or given; float8 weights
(plain casts, and ComfyUI / compressed-tensors scales) dequantized exactly.
Outputs are checked against transformers' ``T5EncoderModel`` /
``UMT5EncoderModel`` holding the same (dequantized) weights. Bad files give
errors that name the tensor.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import mt5fn
from test_checkpoint import tiny
from test_encoder_only import encoder_tree, hf_encoder, hf_hidden, ours

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def encoder_state(cfg, params) -> dict:
    """What ``t5xxl_fp16.safetensors``-style files hold: ``shared.weight`` and ``encoder.*``."""
    state = mt5fn.to_hf_state_dict(encoder_tree(params), cfg)
    return {k: v.clone() for k, v in state.items() if k != "encoder.embed_tokens.weight"}


def write(path, state) -> str:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when a config is given
        return mt5fn.load_pretrained(*args, **kwargs)


@pytest.mark.parametrize("kind, reference_class", [("t5-v1_1", "T5EncoderModel"), ("t5", "T5EncoderModel"),
                                                    ("umt5", "UMT5EncoderModel")])
def test_inferred_config_and_outputs_match_transformers(tmp_path, kind, reference_class):
    cfg = tiny(kind)
    params = mt5fn.init_params(cfg, seed=1)
    file = write(tmp_path / "t5xxl_fp32.safetensors", encoder_state(cfg, params))
    with pytest.warns(UserWarning, match="inferred from the tensor shapes") as caught:
        got_cfg, got = mt5fn.load_pretrained(file)
    message = str(caught[0].message)
    assert "feed_forward_proj" in message and "layer_norm_epsilon=1e-06" in message and "config=" in message
    assert sorted(got) == ["encoder", "shared"]
    for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "is_gated",
                  "relative_attention_num_buckets", "per_layer_position_bias", "activation"):
        assert getattr(got_cfg, field) == getattr(cfg, field), field
    assert got_cfg.model_type == ("umt5" if kind == "umt5" else "t5")
    # The file's config differs from the test's in what it cannot show (max_distance 16 here): give it.
    model = hf_encoder(reference_class, cfg, params)
    given_cfg, given = load_quietly(file, config=cfg)
    torch.testing.assert_close(ours(given, given_cfg), hf_hidden(model, cfg), atol=1e-5, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(mt5fn.flatten_params(got).values(),
                                                 mt5fn.flatten_params(given).values()))


def test_config_as_preset_name_json_file_and_folder(tmp_path):
    cfg = mt5fn.MT5Config.preset("t5-v1_1-small").replace(vocab_size=64, num_layers=1, num_decoder_layers=1)
    params = encoder_tree(mt5fn.init_params(cfg))
    file = write(tmp_path / "enc.safetensors", encoder_state(cfg, params))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(cfg.to_hf()))
    for config in (cfg, str(tmp_path / "cfg" / "config.json"), tmp_path / "cfg"):
        got_cfg, _ = load_quietly(file, config=config)
        assert got_cfg.d_model == 512 and got_cfg.vocab_size == 64
    with pytest.raises(ValueError, match="config: 'no-such-model' is neither a config.json file nor a preset"):
        mt5fn.load_pretrained(file, config="no-such-model")
    with pytest.raises(TypeError, match="config must be"):
        mt5fn.load_pretrained(file, config=3)


def test_names_without_encoder_prefix_and_bundled_files(tmp_path):
    cfg = tiny("t5-v1_1")
    params = mt5fn.init_params(cfg, seed=2)
    state = encoder_state(cfg, params)
    bare = {("embed_tokens.weight" if k == "shared.weight" else k.removeprefix("encoder.")): v
            for k, v in state.items()}
    assert not any(k.startswith("encoder.") for k in bare)
    bundle = {f"text_encoders.t5xxl.transformer.{k}": v for k, v in state.items()}
    bundle["text_encoders.clip_l.transformer.text_model.embeddings.position_ids"] = torch.zeros(3, 5)
    bundle["model.diffusion_model.x_embedder.weight"] = torch.zeros(4)
    for name, content in (("bare", bare), ("bundle", bundle)):
        _, got = load_quietly(write(tmp_path / f"{name}.safetensors", content), config=cfg)
        assert all(torch.equal(a, b) for a, b in zip(mt5fn.flatten_params(got).values(),
                                                     mt5fn.flatten_params(encoder_tree(params)).values())), name


def test_a_full_model_file_and_encoder_only(tmp_path):
    cfg = tiny("mt5")
    params = mt5fn.init_params(cfg, seed=3)
    mt5fn.save_pretrained(params, cfg, tmp_path / "ckpt")
    file = str(tmp_path / "ckpt" / "model.safetensors")
    got_cfg, got = load_quietly(file, config=cfg)
    assert "decoder" in got and "lm_head" in got and got_cfg.num_decoder_layers == 3
    with pytest.warns(UserWarning, match="inferred"):
        inferred, _ = mt5fn.load_pretrained(file)
    assert inferred.num_decoder_layers == 3 and not inferred.tie_word_embeddings
    _, enc = load_quietly(file, config=cfg, encoder_only=True)
    assert sorted(enc) == ["encoder", "shared"]


def test_a_float16_file_keeps_wo_in_float32(tmp_path):
    cfg = tiny("t5-v1_1")
    params = mt5fn.init_params(cfg, seed=4)
    state = {k: v.half() for k, v in encoder_state(cfg, params).items()}
    _, got = load_quietly(write(tmp_path / "t5xxl_fp16.safetensors", state), config=cfg)
    for path, leaf in mt5fn.flatten_params(got).items():
        assert leaf.dtype == (torch.float32 if path.endswith("mlp.wo") else torch.float16), path


def quantize_state(state: dict, fp8: torch.dtype, scale_name: str | None, per_row: bool = False) -> dict:
    """Projections in float8 (with a scale when ``scale_name``); norms, tables and embedding in float16."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")):
            if scale_name is None:
                out[name] = tensor.to(fp8)
            else:
                amax = tensor.abs().amax(dim=1, keepdim=True) if per_row else tensor.abs().max()
                scale = (amax / torch.finfo(fp8).max).float()
                out[name] = (tensor / scale).to(fp8)
                out[name[: -len("weight")] + scale_name] = scale.reshape(-1) if per_row else scale.reshape(())
                out[name[: -len("weight")] + "input_scale"] = torch.ones(())  # activation scales: ignored
        else:
            out[name] = tensor.half()
    if scale_name:
        out["scaled_fp8"] = torch.zeros(0, dtype=fp8)
    return out


def dequantized(state: dict, dtype: torch.dtype) -> dict:
    """The reference dequantization: float32(w) * scale, rounded once."""
    out = {}
    for name, tensor in state.items():
        if not name.endswith(".weight") and name != "shared.weight":
            continue
        base = name[: -len("weight")]
        scale = state.get(base + "scale_weight", state.get(base + "weight_scale"))
        value = tensor.float() if scale is None else tensor.float() * (
            scale.float().reshape(-1, 1) if scale.numel() > 1 else scale.float())
        out[name] = value.to(dtype)
    return out


@pytest.mark.parametrize("fp8, scale_name, per_row", [
    (torch.float8_e4m3fn, None, False), (torch.float8_e5m2, None, False),
    (torch.float8_e4m3fn, "scale_weight", False), (torch.float8_e4m3fn, "weight_scale", False),
    (torch.float8_e4m3fn, "weight_scale", True)],
    ids=["e4m3-cast", "e5m2-cast", "e4m3-scale_weight", "e4m3-weight_scale", "e4m3-per-row"])
def test_float8_files_dequantize_exactly(tmp_path, fp8, scale_name, per_row):
    cfg = tiny("t5-v1_1")
    params = mt5fn.init_params(cfg, seed=5)
    state = quantize_state(encoder_state(cfg, params), fp8, scale_name, per_row)
    file = write(tmp_path / "t5xxl_fp8.safetensors", state)
    for dtype in (torch.float32, torch.bfloat16):
        got_cfg, got = load_quietly(file, dtype=dtype, config=cfg)
        want = dequantized(state, dtype)
        hf = mt5fn.to_hf_state_dict(got, got_cfg)
        for name, tensor in want.items():
            expected = tensor.float() if dtype == torch.float32 or not name.endswith("wo.weight") else tensor
            assert torch.equal(hf[name].to(expected.dtype), expected), name
    _, default = load_quietly(file, config=cfg)  # dtype=None: the file's other tensors' dtype (float16)
    assert default["shared"].dtype == torch.float16
    assert default["encoder"]["blocks"][0]["attn"]["q"].dtype == torch.float16
    assert default["encoder"]["blocks"][0]["mlp"]["wo"].dtype == torch.float32  # the float16 rule
    # The model is the transformers encoder holding the dequantized float32 weights.
    got_cfg, got = load_quietly(file, dtype=torch.float32, config=cfg)
    model = hf_encoder("T5EncoderModel", cfg, got)
    torch.testing.assert_close(ours(got, got_cfg), hf_hidden(model, cfg), atol=1e-5, rtol=0)


def test_save_float8_and_its_loss(tmp_path):
    cfg = tiny("t5-v1_1", d_model=64, d_ff=128, d_kv=16, num_heads=4)
    params = encoder_tree(mt5fn.init_params(cfg, seed=6))
    mt5fn.save_pretrained(params, cfg, tmp_path / "fp8", dtype=torch.float8_e4m3fn)
    from safetensors import safe_open

    with safe_open(tmp_path / "fp8" / "model.safetensors", framework="pt") as handle:
        names = set(handle.keys())
        q = handle.get_tensor("encoder.block.0.layer.0.SelfAttention.q.weight")
    assert q.dtype == torch.float8_e4m3fn and "encoder.block.0.layer.0.SelfAttention.q.scale_weight" in names
    assert "scaled_fp8" in names and "shared.weight" in names
    got_cfg, got = mt5fn.load_pretrained(tmp_path / "fp8", dtype=torch.float32)
    for path, leaf in mt5fn.flatten_params(got).items():
        ref = mt5fn.flatten_params(params)[path]
        # e4m3 keeps 3 mantissa bits: at most 2^-4 relative error on each weight above the subnormal range
        normal = ref.abs() >= ref.abs().max() * 2.0 ** -8
        assert ((leaf - ref).abs() <= 2.0 ** -4 * ref.abs() + 1e-12)[normal].all(), path
    hidden, exact = ours(got, got_cfg), ours(params, cfg)
    relative = ((hidden - exact).norm() / exact.norm()).item()
    assert relative < 0.05, relative  # docs/encoder.md states the measured error on a larger model


def test_bad_single_files_name_the_tensor(tmp_path):
    cfg = tiny("t5-v1_1")
    state = encoder_state(cfg, mt5fn.init_params(cfg))
    clip = write(tmp_path / "clip.safetensors", {"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="not a T5 checkpoint.*'text_model.embeddings.token_embedding.weight'"):
        mt5fn.load_pretrained(clip)
    odd = write(tmp_path / "odd.safetensors", {**state, "encoder.block.0.layer.0.SelfAttention.q.bias": torch.zeros(8)})
    with pytest.raises(ValueError, match="tensor 'encoder.block.0.layer.0.SelfAttention.q.bias' .* does not fit"):
        mt5fn.load_pretrained(odd)
    bad_shape = dict(state)
    bad_shape["encoder.block.1.layer.0.SelfAttention.k.weight"] = torch.zeros(8, 9)
    with pytest.raises(ValueError, match=r"wrong shape: encoder.block.1.layer.0.SelfAttention.k.weight: "
                                         r"shape \(8, 9\)"):
        with pytest.warns(UserWarning):
            mt5fn.load_pretrained(write(tmp_path / "shape.safetensors", bad_shape))
    decoder_only = {k.replace("encoder.", "decoder."): v for k, v in state.items()}
    with pytest.raises(ValueError, match="holds decoder weights .* but no encoder"):
        mt5fn.load_pretrained(write(tmp_path / "dec.safetensors", decoder_only))


def test_a_config_that_disagrees_lists_every_mismatch(tmp_path):
    cfg = tiny("t5-v1_1")
    file = write(tmp_path / "enc.safetensors", encoder_state(cfg, mt5fn.init_params(cfg)))
    with pytest.raises(ValueError) as info:
        mt5fn.load_pretrained(file, config=cfg.replace(d_ff=40, num_layers=3))
    message = str(info.value)
    assert "do not match the given config" in message
    assert "missing: encoder.block.2.layer.0.SelfAttention.q.weight" in message
    for block in (0, 1):
        for name in ("wi_0", "wi_1"):
            assert f"wrong shape: encoder.block.{block}.layer.1.DenseReluDense.{name}.weight: shape (24, 16)" in message
    assert message.count("wrong shape") == 6  # wi_0, wi_1, wo of both blocks


def test_a_float8_scale_of_the_wrong_shape_names_the_tensor(tmp_path):
    cfg = tiny("t5-v1_1")
    state = quantize_state(encoder_state(cfg, mt5fn.init_params(cfg)), torch.float8_e4m3fn, "scale_weight")
    state["encoder.block.1.layer.0.SelfAttention.v.scale_weight"] = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"encoder.block.1.layer.0.SelfAttention.v.scale_weight: scale of shape "
                                         r"\(3, 2\) does not fit encoder.block.1.layer.0.SelfAttention.v.weight"):
        mt5fn.load_pretrained(write(tmp_path / "scaled.safetensors", state), config=cfg)


def test_info_on_a_single_file(tmp_path, capsys):
    from mt5fn.cli import main

    cfg = tiny("umt5")
    file = write(tmp_path / "umt5_xxl_fp16.safetensors",
                 {k: v.half() for k, v in encoder_state(cfg, mt5fn.init_params(cfg)).items()})
    assert main(["info", file]) == 0
    out = capsys.readouterr().out
    assert "weights: single file umt5_xxl_fp16.safetensors" in out and "model: encoder-only (UMT5EncoderModel" in out
    assert "config source: inferred from the tensor shapes" in out and "model_type: umt5" in out
    assert "dtype: float16, float32" in out  # float32: the FFN wo of a float16 model
    assert main(["info", file, "--config", str(tmp_path / "missing.json")]) == 1
    assert "mt5fn info: error:" in capsys.readouterr().err
