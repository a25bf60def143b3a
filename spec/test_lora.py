"""LoRA adapters as pytrees (Hu et al. 2021): ``W' = W + (alpha / r) B A`` on the chosen projections.

* Fresh adapters change nothing: ``B`` starts at zero, so ``apply(params,
  init(...))`` holds bit-identical weights and ``forward`` on it returns
  bit-identical logits.
* Gradients reach only the adapters: ``torch.func.grad`` of a loss through
  ``apply`` with respect to the adapters is the chain rule through the merged
  weight, ``dL/dA = s B^T dL/dW'`` and ``dL/dB = s dL/dW' A^T`` with
  ``s = alpha / r``; the ``alpha`` / ``dropout`` settings get exactly zero;
  every weight the adapters do not target is the input's own tensor, untouched.
* Merged equals applied: ``merge`` returns the weights ``apply`` computes,
  without autograd history, and the same logits.
* ``vmap`` over a stack of adapters (an ensemble of adaptations of one base
  model) equals a loop over them.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap
from torch.utils import _pytree as pytree

import mt5fn
from spec.strategies import model_cases

TOL = dict(rtol=1e-9, atol=1e-9)
_HALF = max(1, settings.default.max_examples // 2)
TARGET_SETS = [("q", "v"), ("k", "o"), ("q", "k", "v", "o", "wi", "wo"), ("wo",), ("wi",)]


def _adapters(case, rank: int, alpha: float, targets, seed: int, fresh: bool) -> dict:
    ad = mt5fn.lora.init(case.params, case.cfg, rank=rank, alpha=alpha, targets=targets, seed=seed)
    if fresh:
        return ad
    generator = torch.Generator().manual_seed(seed + 1)

    def randomise(path, leaf):
        if path[-1].key == "B":  # a trained adapter: B away from zero
            return torch.randn(leaf.shape, generator=generator, dtype=leaf.dtype)
        return leaf

    return pytree.tree_map_with_path(randomise, ad)


def _forward(params, case):
    return mt5fn.forward(params, case.cfg, case.input_ids, case.decoder_input_ids, case.attention_mask,
                         case.decoder_attention_mask)


@given(model_cases(max_length=6), st.integers(1, 4), st.floats(0.5, 32.0), st.sampled_from(TARGET_SETS),
       st.integers(0, 2 ** 16))
def test_fresh_adapters_change_nothing(case, rank, alpha, targets, seed):
    ad = _adapters(case, rank, alpha, targets, seed, fresh=True)
    applied = mt5fn.lora.apply(case.params, ad, case.cfg)
    for path, leaf in mt5fn.flatten_params(case.params).items():
        assert torch.equal(mt5fn.flatten_params(applied)[path], leaf), path
    assert torch.equal(_forward(applied, case), _forward(case.params, case))


@settings(max_examples=_HALF)
@given(model_cases(max_length=6), st.integers(1, 3), st.floats(0.5, 16.0), st.sampled_from(TARGET_SETS),
       st.integers(0, 2 ** 16), st.booleans())
def test_gradients_reach_only_the_adapters(case, rank, alpha, targets, seed, fresh):
    cfg, params = case.cfg, case.params
    ad = _adapters(case, rank, alpha, targets, seed, fresh)

    def loss_of_weights(weights):
        return mt5fn.loss(weights, cfg, case.input_ids, case.labels, case.attention_mask)

    got = grad(lambda adapters: loss_of_weights(mt5fn.lora.apply(params, adapters, cfg)))(ad)
    merged = mt5fn.lora.apply(params, ad, cfg)
    by_weight = mt5fn.flatten_params(grad(loss_of_weights)(merged))  # dL/dW' at the merged weights
    flat_ad, flat_got = mt5fn.flatten_params(ad), mt5fn.flatten_params(got)
    scale = ad["alpha"] / rank  # the stored alpha (float64 here)
    for path in flat_ad:
        if not mt5fn.lora.is_trainable(path):
            assert torch.equal(flat_got[path], torch.zeros_like(flat_ad[path])), path  # settings: no gradient
            continue
        site, factor = path.rsplit(".", 1)
        a, b, g_w = flat_ad[f"{site}.A"], flat_ad[f"{site}.B"], by_weight[site]
        expected = scale * b.T @ g_w if factor == "A" else scale * g_w @ a.T
        torch.testing.assert_close(flat_got[path], expected, **TOL, msg=path)

    adapted = {path.rsplit(".", 1)[0] for path in flat_ad if mt5fn.lora.is_trainable(path)}
    flat_params, flat_merged = mt5fn.flatten_params(params), mt5fn.flatten_params(merged)
    for path, leaf in flat_params.items():
        if path not in adapted:
            assert flat_merged[path] is leaf, path  # not a copy, not touched


@given(model_cases(max_length=6), st.integers(1, 4), st.floats(0.5, 32.0), st.sampled_from(TARGET_SETS),
       st.integers(0, 2 ** 16))
def test_merged_equals_applied(case, rank, alpha, targets, seed):
    ad = _adapters(case, rank, alpha, targets, seed, fresh=False)
    params = pytree.tree_map(lambda leaf: leaf.detach().requires_grad_(True), case.params)
    applied = mt5fn.lora.apply(params, ad, case.cfg)
    merged = mt5fn.lora.merge(params, ad, case.cfg)
    flat_applied = mt5fn.flatten_params(applied)
    for path, leaf in mt5fn.flatten_params(merged).items():
        assert leaf.grad_fn is None, path
        torch.testing.assert_close(leaf, flat_applied[path].detach(), rtol=0, atol=0, msg=path)
    torch.testing.assert_close(_forward(merged, case), _forward(applied, case).detach(), **TOL)


@settings(max_examples=_HALF)
@given(model_cases(max_length=6), st.integers(1, 3), st.sampled_from(TARGET_SETS), st.integers(0, 2 ** 16))
def test_vmap_over_adapters_is_a_loop(case, rank, targets, seed):
    members = [_adapters(case, rank, 4.0, targets, seed + k, fresh=False) for k in range(2)]
    stacked = pytree.tree_map(lambda *leaves: torch.stack(leaves), *members)
    mapped = vmap(lambda ad: _forward(mt5fn.lora.apply(case.params, ad, case.cfg), case))(stacked)
    for k, member in enumerate(members):
        torch.testing.assert_close(mapped[k], _forward(mt5fn.lora.apply(case.params, member, case.cfg), case), **TOL)
