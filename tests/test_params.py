"""The parameter pytree: layout, initialisation, and the bijection with transformers' names."""

from __future__ import annotations

import pytest
import torch

import mt5fn
from reference import hf_model


def _cfg(**changes) -> mt5fn.MT5Config:
    base = dict(vocab_size=50, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_decoder_layers=3, num_heads=2,
                relative_attention_num_buckets=8, relative_attention_max_distance=20)
    return mt5fn.MT5Config(**{**base, **changes})


def test_layout_and_tensor_leaves_only():
    cfg = _cfg()
    params = mt5fn.init_params(cfg)
    assert set(params) == {"shared", "encoder", "decoder", "lm_head"}
    assert len(params["encoder"]["blocks"]) == 2 and len(params["decoder"]["blocks"]) == 3
    assert params["encoder"]["rel_bias"].shape == (8, 2)
    block = params["decoder"]["blocks"][0]
    assert set(block) == {"self_attn_norm", "self_attn", "cross_attn_norm", "cross_attn", "mlp_norm", "mlp"}
    assert block["self_attn"]["q"].shape == (12, 16) and block["self_attn"]["o"].shape == (16, 12)
    assert set(block["mlp"]) == {"wi_0", "wi_1", "wo"}
    assert all(isinstance(leaf, torch.Tensor) for leaf in mt5fn.flatten_params(params).values())
    # No tensor appears twice (gradients would split between keys).
    pointers = [leaf.data_ptr() for leaf in mt5fn.flatten_params(params).values()]
    assert len(pointers) == len(set(pointers))


def test_tied_umt5_and_relu_layouts():
    tied = mt5fn.init_params(_cfg(tie_word_embeddings=True))
    assert "lm_head" not in tied
    umt5 = mt5fn.init_params(_cfg(model_type="umt5"))
    assert "rel_bias" not in umt5["encoder"]
    assert all(block["rel_bias"].shape == (8, 2) for block in umt5["decoder"]["blocks"])
    relu = mt5fn.init_params(_cfg(feed_forward_proj="relu"))
    assert set(relu["encoder"]["blocks"][0]["mlp"]) == {"wi", "wo"}


def test_init_is_seeded_and_typed():
    cfg = _cfg()
    a, b = mt5fn.init_params(cfg, seed=1), mt5fn.init_params(cfg, seed=1)
    c = mt5fn.init_params(cfg, seed=2, dtype=torch.bfloat16)
    assert all(torch.equal(x, y) for x, y in zip(mt5fn.flatten_params(a).values(), mt5fn.flatten_params(b).values()))
    assert not torch.equal(a["shared"], mt5fn.init_params(cfg, seed=2)["shared"])
    assert all(leaf.dtype == torch.bfloat16 for leaf in mt5fn.flatten_params(c).values())
    with pytest.raises(ValueError, match="dtype"):
        mt5fn.init_params(cfg, dtype=torch.int64)


def test_init_follows_transformers_distributions():
    cfg = mt5fn.MT5Config(vocab_size=512, d_model=128, d_kv=32, d_ff=256, num_layers=1, num_heads=4)
    params = mt5fn.init_params(cfg, seed=0)
    block = params["encoder"]["blocks"][0]
    expected = {
        "shared": (params["shared"], 1.0), "lm_head": (params["lm_head"], 1.0),
        "q": (block["attn"]["q"], (128 * 32) ** -0.5), "k": (block["attn"]["k"], 128 ** -0.5),
        "v": (block["attn"]["v"], 128 ** -0.5), "o": (block["attn"]["o"], 128 ** -0.5),
        "wi_0": (block["mlp"]["wi_0"], 128 ** -0.5), "wo": (block["mlp"]["wo"], 256 ** -0.5),
    }
    for name, (tensor, std) in expected.items():
        assert abs(tensor.mean().item()) < 0.05 * std * 10, name
        assert abs(tensor.std().item() / std - 1) < 0.05, name
    assert torch.equal(block["attn_norm"], torch.ones(128))


@pytest.mark.parametrize("model_type,ffn,tied", [("t5", "relu", True), ("mt5", "gated-gelu", False),
                                                 ("umt5", "gated-silu", False), ("umt5", "relu", True)])
def test_bijection_with_transformers_state_dict(model_type, ffn, tied):
    cfg = _cfg(model_type=model_type, feed_forward_proj=ffn, tie_word_embeddings=tied)
    params = mt5fn.init_params(cfg)
    state = mt5fn.to_hf_state_dict(params, cfg)
    model = hf_model(cfg, params)
    assert set(state) == set(model.state_dict())
    back = mt5fn.from_hf_state_dict(state, cfg)
    flat, flat_back = mt5fn.flatten_params(params), mt5fn.flatten_params(back)
    assert list(flat) == list(flat_back)  # same paths in the same order
    assert all(flat[path] is flat_back[path] for path in flat)  # the same tensors: no copies
    # And from transformers' own state dict.
    theirs = mt5fn.from_hf_state_dict(model.state_dict(), cfg)
    assert list(mt5fn.flatten_params(theirs)) == list(flat)
    assert all(torch.equal(a, b) for a, b in zip(mt5fn.flatten_params(theirs).values(), flat.values()))


def test_aliases_legacy_keys_and_tying_by_weights():
    cfg = _cfg(tie_word_embeddings=False)
    params = mt5fn.init_params(cfg)
    state = dict(mt5fn.to_hf_state_dict(params, cfg))
    # Only an alias for the embedding, plus the legacy cross-attention bias.
    embed = state.pop("shared.weight")
    state.pop("decoder.embed_tokens.weight")
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(8, 2)
    loaded = mt5fn.from_hf_state_dict(state, cfg)
    assert loaded["shared"] is embed and "lm_head" in loaded
    # A head equal to the embedding is a tied head, whatever the config says.
    state["lm_head.weight"] = embed.clone()
    assert "lm_head" not in mt5fn.from_hf_state_dict(state, cfg)
    del state["lm_head.weight"]
    assert "lm_head" not in mt5fn.from_hf_state_dict(state, cfg)


def test_mismatches_are_reported_together():
    cfg = _cfg()
    state = dict(mt5fn.to_hf_state_dict(mt5fn.init_params(cfg), cfg))
    del state["encoder.block.1.layer.0.SelfAttention.k.weight"]
    del state["decoder.final_layer_norm.weight"]
    state["encoder.block.9.layer.0.SelfAttention.q.weight"] = torch.zeros(1)
    state["decoder.block.0.layer.2.DenseReluDense.wo.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as error:
        mt5fn.from_hf_state_dict(state, cfg)
    message = str(error.value)
    for text in ("missing: encoder.block.1.layer.0.SelfAttention.k.weight",
                 "missing: decoder.final_layer_norm.weight",
                 "unexpected: encoder.block.9.layer.0.SelfAttention.q.weight",
                 "wrong shape: decoder.block.0.layer.2.DenseReluDense.wo.weight: shape (3, 3), config expects (16, 24)"):
        assert text in message


def test_tree_helpers_round_trip():
    params = mt5fn.init_params(_cfg(model_type="umt5"))
    flat = mt5fn.flatten_params(params)
    rebuilt = mt5fn.unflatten_params(flat)
    assert list(mt5fn.flatten_params(rebuilt)) == list(flat)
    doubled = mt5fn.tree_map(lambda t: t * 2, params)
    assert torch.equal(doubled["shared"], params["shared"] * 2)
    assert mt5fn.num_params(params) == sum(t.numel() for t in flat.values())
