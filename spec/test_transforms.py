"""mt5fn's functions compose with ``torch.func`` transforms (the point of pure functions).

* ``functional_call(MT5Module(cfg, p0), flatten_params(p1), args) == forward(p1, cfg, *args)``:
  the module facade's parameter names are the pytree paths and its forward
  is the pure function of whatever parameters it is handed.
* ``vmap(forward, in_dims=(0, None, None, None))`` over a stack of K parameter
  pytrees (an ensemble) equals a Python loop over the K models; the same
  through ``torch.func.stack_module_state`` + ``functional_call``.
* ``torch.func.grad(loss)`` equals reverse-mode autograd ``loss.backward()``.
* ``vmap(grad(loss))`` over the examples of a batch (per-example gradients)
  equals a loop of single-example gradients; with ``reduction="sum"`` they add
  up to the batch gradient.
* Forward mode agrees with reverse mode: ``jacfwd == jacrev`` and
  ``jvp(f, w, v) == jacrev(f)(w) . v``.

The transformed paths run attention through the plain-softmax path, the loops
through SDPA; float64 parameters make the comparison tight (1e-9).
"""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, stack_module_state, vmap
from torch.utils import _pytree as pytree

import mt5fn
from spec.strategies import model_cases, ones_mask

TOL = dict(rtol=1e-9, atol=1e-9)
# The two slowest properties run half the active profile's examples (ci: 6, thorough: 150).
_HALF = max(1, settings.default.max_examples // 2)


def _stack(trees: list) -> dict:
    """K pytrees of one layout -> one pytree whose leaves have a leading K axis."""
    return pytree.tree_map(lambda *leaves: torch.stack(leaves), *trees)


def _assert_trees_close(actual: dict, expected: dict, **tol) -> None:
    flat_actual, flat_expected = mt5fn.flatten_params(actual), mt5fn.flatten_params(expected)
    assert list(flat_actual) == list(flat_expected)
    for path, value in flat_expected.items():
        torch.testing.assert_close(flat_actual[path], value, **tol, msg=lambda m, p=path: f"{p}: {m}")


def _args(case) -> tuple:
    return (case.input_ids, case.decoder_input_ids, case.attention_mask, case.decoder_attention_mask)


@given(model_cases(), st.integers(0, 2 ** 16))
def test_functional_call_on_module_equals_forward(case, other_seed):
    """``functional_call`` on an ``MT5Module`` built from other weights computes
    ``forward`` of the weights it is handed; names are the pytree paths."""
    module = mt5fn.MT5Module(case.cfg, mt5fn.init_params(case.cfg, seed=other_seed + 1, dtype=torch.float64))
    flat = mt5fn.flatten_params(case.params)
    assert sorted(name for name, _ in module.named_parameters()) == sorted(flat)
    expected = mt5fn.forward(case.params, case.cfg, *_args(case))  # (B, T, V)
    torch.testing.assert_close(functional_call(module, flat, _args(case)), expected, **TOL)
    torch.testing.assert_close(functional_call(module, flat, (case.input_ids, case.decoder_input_ids)),
                               mt5fn.forward(case.params, case.cfg, case.input_ids, case.decoder_input_ids), **TOL)


@given(model_cases(), st.integers(2, 3))
def test_vmap_over_stacked_params_equals_loop(case, members):
    """An ensemble of K models run by ``vmap`` over stacked pytrees (leaves (K, ...))
    equals running each model in a loop, with and without masks."""
    trees = [mt5fn.init_params(case.cfg, seed=case.seed + k, dtype=torch.float64) for k in range(members)]
    stacked = _stack(trees)
    plain = vmap(mt5fn.forward, in_dims=(0, None, None, None))(
        stacked, case.cfg, case.input_ids, case.decoder_input_ids)  # (K, B, T, V)
    expected = torch.stack([mt5fn.forward(tree, case.cfg, case.input_ids, case.decoder_input_ids)
                            for tree in trees])
    torch.testing.assert_close(plain, expected, **TOL)

    masked = vmap(mt5fn.forward, in_dims=(0, None, None, None, None, None))(stacked, case.cfg, *_args(case))
    expected = torch.stack([mt5fn.forward(tree, case.cfg, *_args(case)) for tree in trees])
    torch.testing.assert_close(masked, expected, **TOL)


@settings(max_examples=_HALF)
@given(model_cases(max_batch=2), st.integers(2, 3))
def test_vmap_over_stack_module_state_equals_loop(case, members):
    """``stack_module_state`` over K ``MT5Module``s + ``vmap(functional_call)`` on a
    meta-device copy equals the loop of modules."""
    modules = [mt5fn.MT5Module(case.cfg, mt5fn.init_params(case.cfg, seed=case.seed + k, dtype=torch.float64))
               for k in range(members)]
    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")

    def run(p, b, *args):
        return functional_call(base, (p, b), args)

    stacked = vmap(run, in_dims=(0, 0, None, None, None, None))(params, buffers, *_args(case))  # (K, B, T, V)
    with torch.no_grad():
        expected = torch.stack([module(*_args(case)) for module in modules])
    torch.testing.assert_close(stacked, expected, **TOL)


@given(model_cases(), st.sampled_from(["mean", "sum"]))
def test_func_grad_equals_autograd(case, reduction):
    """``torch.func.grad(loss)(params, ...)`` equals the ``.grad`` that ``loss.backward()``
    leaves on every leaf (tied models: one gradient on ``shared`` from both uses)."""
    args = (case.cfg, case.input_ids, case.labels, case.attention_mask)
    kwargs = dict(decoder_attention_mask=case.decoder_attention_mask, reduction=reduction)
    functional = grad(mt5fn.loss)(case.params, *args, **kwargs)
    leaves = mt5fn.tree_map(lambda leaf: leaf.detach().clone().requires_grad_(True), case.params)
    mt5fn.loss(leaves, *args, **kwargs).backward()
    _assert_trees_close(functional, mt5fn.tree_map(lambda leaf: leaf.grad, leaves), **TOL)


@given(model_cases(min_batch=2, max_batch=3))
def test_vmap_grad_per_example_equals_loop(case):
    """Per-example gradients by ``vmap(grad(loss_of_one_example))`` equal a loop of
    single-example gradients, and with ``reduction="sum"`` add up to the batch gradient."""
    cfg = case.cfg
    mask = ones_mask(case.input_ids) if case.attention_mask is None else case.attention_mask

    def loss_one(params, ids, labels, keep, reduction):
        return mt5fn.loss(params, cfg, ids[None], labels[None], keep[None], reduction=reduction)

    batch = case.input_ids.shape[0]
    for reduction in ("mean", "sum"):
        per_example = vmap(grad(loss_one), in_dims=(None, 0, 0, 0, None))(
            case.params, case.input_ids, case.labels, mask, reduction)  # leaves (B, ...)
        for i in range(batch):
            single = grad(loss_one)(case.params, case.input_ids[i], case.labels[i], mask[i], reduction)
            _assert_trees_close(mt5fn.tree_map(lambda leaf, i=i: leaf[i], per_example), single, **TOL)
    total = grad(mt5fn.loss)(case.params, cfg, case.input_ids, case.labels, mask, reduction="sum")
    _assert_trees_close(mt5fn.tree_map(lambda leaf: leaf.sum(0), per_example), total, **TOL)


@settings(max_examples=_HALF)
@given(model_cases(max_batch=2, max_length=6), st.integers(0, 2 ** 16))
def test_forward_mode_agrees_with_reverse_mode(case, tangent_seed):
    """For the encoder output as a function of the embedding table, and for the logits
    as a function of one decoder weight: ``jacfwd(f)(w) == jacrev(f)(w)`` and
    ``jvp(f, (w,), (v,))[1] == jacrev(f)(w) . v`` for a random direction v."""
    cfg, flat = case.cfg, mt5fn.flatten_params(case.params)

    def with_leaf(path):
        def run(weight):
            return mt5fn.unflatten_params({**flat, path: weight})
        return run

    set_shared, set_weight = with_leaf("shared"), with_leaf("decoder.blocks.0.self_attn.q")

    def encoder_output(shared):
        return mt5fn.encode(set_shared(shared), cfg, case.input_ids, case.attention_mask)  # (B, S, d)

    def logits(weight):
        return mt5fn.forward(set_weight(weight), cfg, *_args(case))  # (B, T, V)

    generator = torch.Generator().manual_seed(tangent_seed)
    for fn, point in ((encoder_output, flat["shared"]), (logits, flat["decoder.blocks.0.self_attn.q"])):
        reverse = jacrev(fn)(point)  # (*out, *in)
        torch.testing.assert_close(jacfwd(fn)(point), reverse, **TOL)
        tangent = torch.randn(point.shape, generator=generator, dtype=point.dtype)
        value, directional = jvp(fn, (point,), (tangent,))
        torch.testing.assert_close(value, fn(point), **TOL)
        contracted = (reverse.flatten(-point.dim()) @ tangent.flatten()).reshape(value.shape)
        torch.testing.assert_close(directional, contracted, **TOL)
