"""Bad input to ``mt5fn.lora.init`` / ``apply`` / ``merge`` / ``save_adapter``: a clear error naming
the argument or the adapter path, before anything is computed or written."""

from __future__ import annotations

import pytest
import torch

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=12, num_layers=2, num_heads=2, model_type="mt5")
RELU = CFG.replace(feed_forward_proj="relu", model_type="t5")
PARAMS = mt5fn.init_params(CFG, seed=0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(rank=0, alpha=4), ValueError, r"rank must be an int >= 1, got 0"),
    (dict(rank=2.0, alpha=4), ValueError, r"rank must be an int >= 1, got 2.0"),
    (dict(rank=2, alpha=float("nan")), ValueError, r"alpha must be a finite number, got nan"),
    (dict(rank=2, alpha=4, dropout=1.0), ValueError, r"dropout must lie in \[0, 1\), got 1.0"),
    (dict(rank=2, alpha=4, targets=()), ValueError, r"targets must be a non-empty list or tuple"),
    (dict(rank=2, alpha=4, targets="q"), ValueError, r"targets must be a non-empty list or tuple.*got 'q'"),
    (dict(rank=2, alpha=4, targets=("q", "lm_head")), ValueError, r"unknown target 'lm_head'"),
    (dict(rank=2, alpha=4, targets=("wi", "wi_0")), ValueError, r"'wi_0' is named twice"),
    (dict(rank=2, alpha=4, seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
])
def test_bad_init_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        mt5fn.lora.init(PARAMS, CFG, **kwargs)


def test_gated_projection_names_on_a_relu_model():
    with pytest.raises(ValueError, match=r"'wi_1' does not fit the model: its feed-forward \(relu\) is not gated"):
        mt5fn.lora.init(mt5fn.init_params(RELU), RELU, rank=2, alpha=4, targets=("wi_1",))


def test_wi_means_both_gated_inputs_and_init_matches_peft_bounds():
    ad = mt5fn.lora.init(PARAMS, CFG, rank=3, alpha=4, targets=("wi",), seed=7)
    mlp = ad["decoder"]["blocks"][1]["mlp"]
    assert set(mlp) == {"wi_0", "wi_1"} and set(ad["decoder"]["blocks"][1]) == {"mlp"}
    a, b = mlp["wi_0"]["A"], mlp["wi_0"]["B"]
    assert a.shape == (3, 8) and b.shape == (12, 3) and not b.any()
    assert a.abs().max() <= 8 ** -0.5 and a.abs().max() > 0.5 * 8 ** -0.5  # U(-1/sqrt(in), 1/sqrt(in))
    again = mt5fn.lora.init(PARAMS, CFG, rank=3, alpha=4, targets=("wi",), seed=7)
    assert torch.equal(again["decoder"]["blocks"][1]["mlp"]["wi_0"]["A"], a)  # seeded


def _adapters():
    return mt5fn.lora.init(PARAMS, CFG, rank=2, alpha=4, targets=("q", "v"))


def _with(change):
    ad = _adapters()
    change(ad)
    return ad


@pytest.mark.parametrize("change, match", [
    (lambda ad: ad["encoder"]["blocks"][0]["attn"]["q"].update(A=torch.zeros(2, 9)),
     r"encoder\.blocks\.0\.attn\.q\.A has shape \(2, 9\) but the model's encoder\.blocks\.0\.attn\.q "
     r"\(out, in\) = \(8, 8\) needs \(r, 8\)"),
    (lambda ad: ad["decoder"]["blocks"][1]["self_attn"]["v"].update(B=torch.zeros(8, 3)),
     r"decoder\.blocks\.1\.self_attn\.v\.B has shape \(8, 3\).*needs \(8, r\) with r = 2"),
    (lambda ad: ad["decoder"]["blocks"][0]["cross_attn"]["q"].update(A=torch.zeros(3, 8), B=torch.zeros(8, 3)),
     r"every projection needs the same rank; encoder\.blocks\.0\.attn\.q has r = 2 but "
     r"decoder\.blocks\.0\.cross_attn\.q has r = 3"),
    (lambda ad: ad["encoder"]["blocks"][0]["attn"].update(wi={"A": torch.zeros(2, 8), "B": torch.zeros(8, 2)}),
     r"encoder\.blocks\.0\.attn\.wi does not fit the model"),
    (lambda ad: ad["encoder"]["blocks"][0].update(cross_attn={}),
     r"encoder\.blocks\.0 has 'cross_attn', not a sublayer of a encoder block"),
    (lambda ad: ad["encoder"]["blocks"].pop(), r"encoder\.blocks must be a list of 2 blocks.*got 1 blocks"),
    (lambda ad: ad.pop("alpha"), r"'alpha' must be a 0-d floating tensor, got missing"),
    (lambda ad: ad.update(alpha=4.0), r"'alpha' must be a 0-d floating tensor, got float"),
    (lambda ad: ad.update(lm_head={}), r"unexpected top-level keys \['lm_head'\]"),
    (lambda ad: ad["encoder"]["blocks"][0]["attn"]["q"].pop("B"), r"encoder\.blocks\.0\.attn\.q must be a dict "
                                                                  r"with 'A' and 'B'"),
])
def test_adapters_that_do_not_fit_are_refused_by_apply_merge_and_save(tmp_path, change, match):
    ad = _with(change)
    for call in (lambda: mt5fn.lora.apply(PARAMS, ad, CFG), lambda: mt5fn.lora.merge(PARAMS, ad, CFG),
                 lambda: mt5fn.lora.save_adapter(ad, CFG, tmp_path / "a")):
        with pytest.raises(ValueError, match=match):
            call()
    assert not (tmp_path / "a").exists()


def test_adapters_of_another_depth_are_refused():
    deeper = CFG.replace(num_layers=3)
    ad = mt5fn.lora.init(mt5fn.init_params(deeper), deeper, rank=2, alpha=4)
    with pytest.raises(ValueError, match=r"encoder\.blocks must be a list of 2 blocks \(the config's depth\), "
                                         r"got 3 blocks"):
        mt5fn.lora.apply(PARAMS, ad, CFG)


def test_prepared_or_encoder_only_trees():
    prepared = mt5fn.prepare_decoding(PARAMS, CFG, min_numel=0)
    with pytest.raises(ValueError, match=r"decoder\.blocks\.0\.self_attn\.q is not a leaf of this tree"):
        mt5fn.lora.apply(prepared, _adapters(), CFG)
    encoder_only = {"shared": PARAMS["shared"], "encoder": PARAMS["encoder"]}
    with pytest.raises(ValueError, match=r"adapters adapt the decoder but params have no decoder"):
        mt5fn.lora.apply(encoder_only, _adapters(), CFG)
    ad = mt5fn.lora.init(encoder_only, CFG, rank=2, alpha=4)
    assert set(ad) == {"encoder", "alpha", "dropout"}
    merged = mt5fn.lora.merge(encoder_only, ad, CFG)
    assert set(merged) == {"shared", "encoder"}
