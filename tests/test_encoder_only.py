"""Encoder-only models: transformers' T5EncoderModel, MT5EncoderModel and UMT5EncoderModel folders.

They load (safetensors, sharded or not, and ``.bin``) as a tree with
``shared`` and ``encoder`` only, and ``encode`` matches the transformers class
to float32 round-off -- and under bfloat16 and float16 the same class in the
same dtype (float16 with ``wo`` kept in float32 on both sides). Functions
that need the decoder refuse such a tree. ``encoder_only=True`` on a full
checkpoint reads nothing of the decoder (peak resident memory is measured),
and saving an encoder-only tree writes a folder the matching transformers
class loads with no missing or unexpected keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mt5fn
from mt5fn.cli import main
from test_checkpoint import tiny

KINDS = {"T5EncoderModel": "t5-v1_1", "MT5EncoderModel": "mt5", "UMT5EncoderModel": "umt5"}


def encoder_tree(params: dict) -> dict:
    return {"shared": params["shared"], "encoder": params["encoder"]}


def hf_encoder(name: str, cfg: mt5fn.MT5Config, params: dict):
    """The transformers encoder class holding ``params``' encoder, float32, eager attention."""
    import transformers

    from reference import hf_config

    model = getattr(transformers, name)(hf_config(cfg))
    state = {k: v.detach().clone() for k, v in mt5fn.to_hf_state_dict(encoder_tree(params), cfg).items()}
    model.load_state_dict(state, strict=True)
    model.set_attn_implementation("eager")
    return model.eval()


def batch(cfg):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, cfg.vocab_size, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return ids, mask


def hf_hidden(model, cfg):
    ids, mask = batch(cfg)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def ours(params, cfg):
    ids, mask = batch(cfg)
    with torch.no_grad():
        return mt5fn.encode(params, cfg, ids, mask)


def save_bin(model, path) -> None:
    os.makedirs(path)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), os.path.join(path, "pytorch_model.bin"))


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
@pytest.mark.parametrize("name", list(KINDS))
def test_transformers_encoder_folders_load_and_match(tmp_path, name, layout):
    cfg = tiny(KINDS[name])
    params = mt5fn.init_params(cfg, seed=4)
    model = hf_encoder(name, cfg, params)
    folder = tmp_path / "enc"
    if layout == "bin":
        save_bin(model, folder)
    else:
        model.save_pretrained(folder, max_shard_size="4KB" if layout == "sharded" else "5GB")
        assert (folder / "model.safetensors.index.json").exists() == (layout == "sharded")
    loaded_cfg, loaded = mt5fn.load_pretrained(folder)
    assert sorted(loaded) == ["encoder", "shared"]
    torch.testing.assert_close(ours(loaded, loaded_cfg), hf_hidden(model, cfg), atol=1e-5, rtol=0)
    ids, mask = batch(cfg)
    for call in (lambda: mt5fn.forward(loaded, loaded_cfg, ids, ids, mask),
                 lambda: mt5fn.loss(loaded, loaded_cfg, ids, ids, mask),
                 lambda: mt5fn.generate(loaded, loaded_cfg, ids, mask, max_new_tokens=2),
                 lambda: mt5fn.init_cache(loaded, loaded_cfg, ours(loaded, loaded_cfg), mask, max_length=4)):
        with pytest.raises(ValueError, match="no decoder"):
            call()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(KINDS))
def test_half_precision_matches_transformers_in_the_same_dtype(tmp_path, name, dtype):
    import transformers

    cfg = tiny(KINDS[name])
    params = mt5fn.init_params(cfg, seed=5)
    hf_encoder(name, cfg, params).save_pretrained(tmp_path / "enc")
    model = getattr(transformers, name).from_pretrained(tmp_path / "enc", dtype=dtype)
    model.set_attn_implementation("eager")
    low_cfg, low = mt5fn.load_pretrained(tmp_path / "enc", dtype=dtype)
    theirs = dict(model.named_parameters())
    for path, hf_name in mt5fn.checkpoint._hf_names.match_names(
            {k: tuple(v.shape) for k, v in theirs.items()}, low_cfg, encoder_only=True).items():
        leaf = mt5fn.flatten_params(low)[path]
        assert leaf.dtype == theirs[hf_name].dtype, (path, leaf.dtype, theirs[hf_name].dtype)  # wo: float32 in fp16
    expected = hf_hidden(model.eval(), cfg).float()
    got = ours(low, low_cfg).float()
    reference = ours(params, cfg)
    # The same half-precision arithmetic up to kernel accumulation order (SDPA's fused kernel rounds
    # elsewhere than transformers' eager softmax): within 2% of the activations of transformers in that
    # dtype, and no farther from float32 than transformers is.
    scale = reference.abs().max()
    assert (got - expected).abs().max() <= 0.02 * scale
    assert (got - reference).abs().max() <= 1.5 * (expected - reference).abs().max() + 1e-3 * scale


@pytest.mark.parametrize("name", list(KINDS))
def test_save_an_encoder_only_tree_for_the_transformers_class(tmp_path, name):
    import transformers

    cfg = tiny(KINDS[name])
    params = encoder_tree(mt5fn.init_params(cfg, seed=6))
    mt5fn.save_pretrained(params, cfg, tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["architectures"] == [name]
    assert not (tmp_path / "enc" / "generation_config.json").exists()
    model, info = getattr(transformers, name).from_pretrained(tmp_path / "enc", output_loading_info=True)
    assert not any(info.values()), info
    model.set_attn_implementation("eager")
    torch.testing.assert_close(hf_hidden(model.eval(), cfg), ours(params, cfg), atol=1e-5, rtol=0)
    again_cfg, again = mt5fn.load_pretrained(tmp_path / "enc")
    assert sorted(again) == ["encoder", "shared"] and again_cfg.model_type == cfg.model_type


def test_encoder_only_on_a_full_checkpoint(tmp_path):
    cfg = tiny("mt5")
    params = mt5fn.init_params(cfg, seed=7)
    mt5fn.save_pretrained(params, cfg, tmp_path / "full", max_shard_size=3000)
    _, enc = mt5fn.load_pretrained(tmp_path / "full", encoder_only=True, dtype="bfloat16")
    assert sorted(enc) == ["encoder", "shared"]
    for path, leaf in mt5fn.flatten_params(enc).items():
        assert torch.equal(leaf, mt5fn.flatten_params(params)[path].bfloat16()), path
    with pytest.raises(ValueError, match="encoder_only must be a bool"):
        mt5fn.load_pretrained(tmp_path / "full", encoder_only="yes")


MEMORY_SCRIPT = textwrap.dedent("""
    import sys, mt5fn
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    before = status("VmRSS:")
    cfg, params = mt5fn.load_pretrained(sys.argv[1], encoder_only=sys.argv[2] == "1")
    leaves = mt5fn.flatten_params(params).values()
    total = sum(float(t.double().sum()) for t in leaves)  # touch every byte that was loaded
    print(before, status("VmHWM:"), sum(t.numel() * t.element_size() for t in leaves))
""")


def test_encoder_only_load_never_reads_the_decoder(tmp_path):
    """Peak resident memory of an encoder-only load of a checkpoint whose decoder is 20x the encoder."""
    cfg = mt5fn.MT5Config(vocab_size=512, d_model=512, d_kv=64, d_ff=1024, num_layers=1, num_decoder_layers=20,
                          num_heads=8, tie_word_embeddings=True)
    params = mt5fn.init_params(cfg)
    mt5fn.save_pretrained(params, cfg, tmp_path / "big", max_shard_size="50MB")
    decoder = mt5fn.num_params(params["decoder"]) * 4
    del params
    run = lambda flag: list(map(int, subprocess.run(  # noqa: E731
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "big"), flag], capture_output=True, text=True,
        check=True, timeout=300).stdout.split()))
    before, peak, loaded = run("1")
    assert decoder > 20 * loaded  # the encoder and the embedding are what is loaded
    assert peak - before < loaded + 0.25 * decoder, (peak - before, loaded, decoder)
    before_full, peak_full, loaded_full = run("0")  # the same measurement sees a full load
    assert peak_full - before_full > 0.75 * decoder


def test_info_describes_an_encoder_only_folder(tmp_path, capsys):
    cfg = tiny("umt5")
    params = encoder_tree(mt5fn.init_params(cfg))
    mt5fn.save_pretrained(params, cfg, tmp_path / "enc")
    assert main(["info", str(tmp_path / "enc")]) == 0
    out = capsys.readouterr().out
    assert "model: encoder-only (UMT5EncoderModel" in out
    assert f"{mt5fn.num_params(params['encoder']):,}" in out and "decoder" not in out.split("parameters:")[1]
    assert f"{mt5fn.num_params(params):,}" in out


def test_float16_with_activations_past_its_range_stays_finite_and_accurate(tmp_path):
    """T5 v1.1's FFN outputs exceed float16's range; with wo in float32 (transformers' rule) the
    float16 encoder stays finite and within 1% of float32, as transformers' float16 model does."""
    import transformers

    cfg = tiny("t5-v1_1", d_model=32, d_kv=8, d_ff=64, num_heads=4)
    params = encoder_tree(mt5fn.init_params(cfg, seed=9))
    params["encoder"]["blocks"][0]["mlp"]["wo"] = params["encoder"]["blocks"][0]["mlp"]["wo"] * 1e6
    mt5fn.save_pretrained(params, cfg, tmp_path / "enc")
    model = transformers.T5EncoderModel.from_pretrained(tmp_path / "enc", output_hidden_states=True)
    model.set_attn_implementation("eager")
    ids, mask = batch(cfg)
    with torch.no_grad():
        residual = model(input_ids=ids, attention_mask=mask).hidden_states[1]
    assert residual.abs().max() > 1e5  # past float16's largest value, 65504
    half_cfg, half = mt5fn.load_pretrained(tmp_path / "enc", dtype=torch.float16)
    theirs = transformers.T5EncoderModel.from_pretrained(tmp_path / "enc", dtype=torch.float16)
    theirs.set_attn_implementation("eager")
    got, expected, exact = ours(half, half_cfg).float(), hf_hidden(theirs.eval(), cfg).float(), ours(params, cfg)
    keep = mask.bool()
    assert torch.isfinite(got).all() and torch.isfinite(expected).all()
    error = lambda h: ((h - exact)[keep].norm() / exact[keep].norm()).item()  # noqa: E731
    assert error(got) < 1e-2 and error(expected) < 1e-2
    assert error(got) < 2 * error(expected)


def test_quantize_on_load(tmp_path):
    from mt5fn.quant import is_quantized

    cfg = tiny("t5-v1_1")
    params = encoder_tree(mt5fn.init_params(cfg, seed=10))
    mt5fn.save_pretrained(params, cfg, tmp_path / "enc")
    q_cfg, q = mt5fn.load_pretrained(tmp_path / "enc", quantize="int8")
    assert is_quantized(q) and sorted(q) == ["encoder", "shared"]
    exact = ours(params, cfg)
    assert ((ours(q, q_cfg).float() - exact).norm() / exact.norm()) < 0.05
    with pytest.raises(ValueError, match="int8"):
        mt5fn.load_pretrained(tmp_path / "enc", quantize="int3")
    with pytest.raises(ValueError, match="quantize must be None or a scheme name"):
        mt5fn.load_pretrained(tmp_path / "enc", quantize=8)
