"""``mt5fn.intermediates`` against transformers' ``output_hidden_states=True, output_attentions=True``.

Tiny t5 / mt5 / umt5 models in float32 with eager attention, padded encoder
and decoder batches: every hidden state and attention map agrees to 1e-5 of
its magnitude, with transformers' layout (``num_layers + 1`` hidden states,
the last one after the final norm; (B, H, Tq, Tk) probabilities after the
softmax). ``logits`` equals ``forward``'s; ``grad`` and ``vmap`` work
through it; bad input is refused as ``forward`` refuses it.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import mt5fn
from reference import hf_model

KEYS = ("encoder_hidden_states", "encoder_attentions", "decoder_hidden_states", "decoder_attentions",
        "cross_attentions")


def _model(model_type: str, decoder_layers: int = 2):
    cfg = mt5fn.MT5Config(vocab_size=48, d_model=16, d_kv=4, d_ff=24, num_layers=3,
                          num_decoder_layers=decoder_layers, num_heads=3, model_type=model_type,
                          feed_forward_proj="relu" if model_type == "t5" else "gated-gelu",
                          tie_word_embeddings=model_type == "t5", dropout_rate=0.0)
    return cfg, mt5fn.init_params(cfg, seed=4)


def _batch(cfg):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size, (3, 7), generator=generator)
    dec = torch.randint(2, cfg.vocab_size, (3, 5), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    dec_mask = torch.ones_like(dec)
    dec_mask[2, 3:] = 0
    return ids, dec, mask, dec_mask


def _close(ours, theirs, what):
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * scale, msg=what)


@pytest.mark.parametrize("model_type, decoder_layers", [("t5", 2), ("mt5", 2), ("umt5", 2), ("mt5", 1)])
def test_equals_transformers(model_type, decoder_layers):
    cfg, params = _model(model_type, decoder_layers)
    ids, dec, mask, dec_mask = _batch(cfg)
    ours = mt5fn.intermediates(params, cfg, ids, dec, mask, dec_mask)
    with torch.no_grad():
        ref = hf_model(cfg, params)(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                                    decoder_attention_mask=dec_mask, output_hidden_states=True,
                                    output_attentions=True)
    lengths = dict(encoder_hidden_states=cfg.num_layers + 1, encoder_attentions=cfg.num_layers,
                   decoder_hidden_states=cfg.num_decoder_layers + 1, decoder_attentions=cfg.num_decoder_layers,
                   cross_attentions=cfg.num_decoder_layers)
    for key in KEYS:
        theirs = getattr(ref, key)
        assert isinstance(ours[key], tuple) and len(ours[key]) == len(theirs) == lengths[key], key
        for index, (a, b) in enumerate(zip(ours[key], theirs)):
            assert a.shape == b.shape, (key, index)
            _close(a, b, f"{key}[{index}]")
    _close(ours["encoder_last_hidden_state"], ref.encoder_last_hidden_state, "encoder_last_hidden_state")
    _close(ours["logits"], ref.logits, "logits")
    # forward's attention runs SDPA, the observed one the plain softmax: the same function to round-off
    _close(ours["logits"], mt5fn.forward(params, cfg, ids, dec, mask, dec_mask), "logits vs forward")
    _close(ours["encoder_hidden_states"][-1], mt5fn.encode(params, cfg, ids, mask), "encoder output vs encode")
    heads, source, target = cfg.num_heads, ids.shape[1], dec.shape[1]
    assert ours["encoder_attentions"][0].shape == (3, heads, source, source)
    assert ours["decoder_attentions"][0].shape == (3, heads, target, target)
    assert ours["cross_attentions"][0].shape == (3, heads, target, source)
    torch.testing.assert_close(ours["cross_attentions"][-1].sum(-1), torch.ones(3, heads, target))
    assert (ours["decoder_attentions"][0].triu(1) == 0).all()  # causal


def test_grad_and_vmap_work_through_it():
    cfg, params = _model("mt5")
    ids, dec, mask, _ = _batch(cfg)

    def attention_on_first_key(p):  # how much head 0 of the last cross-attention looks at source token 0
        return mt5fn.intermediates(p, cfg, ids, dec, mask)["cross_attentions"][-1][:, 0, :, 0].sum()

    got = grad(attention_on_first_key)(params)
    leaves = mt5fn.tree_map(lambda leaf: leaf.detach().requires_grad_(True), params)
    attention_on_first_key(leaves).backward()
    for path, value in mt5fn.flatten_params(got).items():
        expected = mt5fn.flatten_params(leaves)[path].grad  # None: the leaf does not reach that weight
        expected = torch.zeros_like(value) if expected is None else expected
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6, msg=path)
    assert got["encoder"]["blocks"][0]["attn"]["q"].abs().sum() > 0

    def per_example(i, d, m):
        out = mt5fn.intermediates(params, cfg, i[None], d[None], m[None])
        return out["encoder_hidden_states"][1][0], out["decoder_attentions"][0][0]

    hidden, attention = vmap(per_example)(ids, dec, mask)
    full = mt5fn.intermediates(params, cfg, ids, dec, mask)
    torch.testing.assert_close(hidden, full["encoder_hidden_states"][1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention, full["decoder_attentions"][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda p, c, i, d: mt5fn.intermediates(p, c, i, d[:2]), ValueError,
     r"decoder_input_ids has batch size 2 but input_ids has 3"),
    (lambda p, c, i, d: mt5fn.intermediates(p, c, i.float(), d), TypeError, r"input_ids must hold integer token ids"),
    (lambda p, c, i, d: mt5fn.intermediates(p, c, i, d + 100), ValueError,
     r"decoder_input_ids must lie in \[0, vocab_size=48\)"),
    (lambda p, c, i, d: mt5fn.intermediates(p, c, i, d, torch.ones(3, 2)), ValueError,
     r"attention_mask must have the shape of input_ids \(3, 7\)"),
    (lambda p, c, i, d: mt5fn.intermediates({"shared": p["shared"], "encoder": p["encoder"]}, c, i, d), ValueError,
     r"the model has no decoder"),
    (lambda p, c, i, d: mt5fn.intermediates(p, "mt5", i, d), TypeError, r"cfg must be an MT5Config"),
])
def test_validates_like_forward(call, error, match):
    cfg, params = _model("mt5")
    ids, dec, _, _ = _batch(cfg)
    with pytest.raises(error, match=match):
        call(params, cfg, ids, dec)
