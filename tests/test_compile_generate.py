"""``generate(..., compile=True)``: the one-token step through ``torch.compile`` with the static cache.

Captured with the "eager" and "aot_eager" backends (graph capture and
AOTAutograd without code generation: an inductor build is left to the
benchmarks, see tests/test_compile.py). The compiled step decodes the same
tokens as the eager loop (the spec's equality family checks it against
``mt5fn/reference.py`` too), one graph serves every token, position and call
of the same shapes, and where torch cannot compile, one warning names the
reason and decoding stays eager.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import mt5fn
import mt5fn.decoding._compiled as compiled_module
import mt5fn.decoding._generate as generate_module

CONFIGS = {
    "mt5": mt5fn.MT5Config(model_type="mt5", vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                           num_heads=4),
    "umt5-uneven": mt5fn.MT5Config(model_type="umt5", vocab_size=48, d_model=24, d_kv=5, d_ff=40, num_layers=1,
                                   num_decoder_layers=2, num_heads=3, relative_attention_num_buckets=8,
                                   relative_attention_max_distance=6),
    "t5-relu-tied": mt5fn.MT5Config(model_type="t5", vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=1,
                                    num_heads=4, feed_forward_proj="relu", tie_word_embeddings=True),
}


def _batch(cfg: mt5fn.MT5Config, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, cfg.vocab_size, (3, 6), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    compiled_module._failures.clear()
    yield
    torch._dynamo.reset()
    compiled_module._failures.clear()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("settings", [dict(), dict(num_beams=3), dict(do_sample=True, top_k=5)])
def test_compiled_decoding_gives_the_eager_tokens(name, backend, settings):
    cfg = CONFIGS[name]
    params = mt5fn.init_params(cfg, seed=1)
    ids, mask = _batch(cfg)
    seed = dict(generator=torch.Generator().manual_seed(3)) if settings.get("do_sample") else {}
    eager = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=7, **settings, **seed)
    seed = dict(generator=torch.Generator().manual_seed(3)) if settings.get("do_sample") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it really compiled
        compiled = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=7, compile=backend, **settings, **seed)
    assert torch.equal(compiled, eager)


def test_one_graph_serves_every_token_position_and_call_of_the_same_shapes():
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)
    for max_new_tokens in (9, 12, 5, 20):  # different lengths share the power-of-two cache
        mt5fn.generate(params, cfg, ids, mask, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                       compile="eager")
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]


def test_where_torch_cannot_compile_it_warns_once_and_decodes_eagerly(monkeypatch):
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)
    monkeypatch.setattr(generate_module, "cannot_compile", lambda backend, device: "no C++ compiler on PATH")
    with pytest.warns(UserWarning, match="no C.. compiler on PATH; decoding eagerly") as seen:
        out = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=6, compile=True)
    assert len(seen) == 1
    assert torch.equal(out, mt5fn.generate(params, cfg, ids, mask, max_new_tokens=6))
    assert counters["stats"]["unique_graphs"] == 0


def test_a_compiler_failure_falls_back_with_one_warning(monkeypatch):
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)

    def broken(backend, device):
        def step(*args):
            raise torch._dynamo.exc.Unsupported("a construct the compiler does not support")
        return step

    monkeypatch.setattr(generate_module, "compiled_step", broken)
    with pytest.warns(UserWarning, match="torch.compile failed .*Unsupported.*decoding eagerly") as seen:
        out = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=6, compile=True)
    assert len(seen) == 1
    assert torch.equal(out, mt5fn.generate(params, cfg, ids, mask, max_new_tokens=6))


def test_a_step_that_failed_to_compile_is_not_traced_again(monkeypatch):
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)
    attempts = []

    def broken(backend, device):
        def step(*args):
            attempts.append(backend)
            raise torch._dynamo.exc.Unsupported("a construct the compiler does not support")
        return step

    monkeypatch.setattr(generate_module, "compiled_step", broken)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        mt5fn.generate(params, cfg, ids, mask, max_new_tokens=4, compile=True)
    with pytest.warns(UserWarning, match="failed on this step before .*Unsupported.*decoding eagerly") as seen:
        out = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=4, compile=True)
    assert attempts == ["inductor"] and len(seen) == 1
    assert torch.equal(out, mt5fn.generate(params, cfg, ids, mask, max_new_tokens=4))
    other = cfg.replace(num_heads=2, d_kv=16)  # another model: tried afresh
    with pytest.warns(UserWarning, match="torch.compile failed"):
        mt5fn.generate(mt5fn.init_params(other, seed=0), other, ids, mask, max_new_tokens=4, compile=True)
    assert attempts == ["inductor", "inductor"]


def _held_forms(cfg: mt5fn.MT5Config, rows: int, form: str) -> dict:
    """A prepare_decoding tree whose large leaves take ``form`` (every weight re-laid-out: min_numel=0)."""
    from mt5fn.kernels import candidate_forms
    params = mt5fn.init_params(cfg, seed=0)
    if form in ("int8", "int8-dynamic"):
        params = mt5fn.quantize(params, cfg, "int8")
    prepared = mt5fn.prepare_decoding(params, cfg, rows=rows, min_numel=0)  # the deterministic rule's forms
    if form == "int8-dynamic":
        builders, _ = candidate_forms(prepared["lm_head"], rows)
        if form not in builders:
            pytest.skip("this torch build has no oneDNN int8 linear")
        prepared = {**prepared, "lm_head": builders[form]()}
    return prepared


@pytest.mark.parametrize("rows, form", [(1, "columns"), (3, "onednn"), (1, "int8"), (1, "int8-dynamic")])
def test_a_held_tree_compiles_with_the_forms_its_kernel_choice_made(rows, form):
    """A ``prepare_decoding`` tree compiles as it is: the packed forms enter the graph as opaque operators
    (kernels._opaque), and the compiled step decodes the eager step's tokens."""
    from mt5fn.kernels import linear_form
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=300, d_model=256, d_kv=32, d_ff=512, num_layers=1,
                          num_heads=8)
    held = _held_forms(cfg, rows, form)
    if linear_form(held["lm_head"]) != form:
        pytest.skip(f"this torch build made no {form} leaf")
    ids, mask = _batch(cfg)
    ids, mask = ids[:rows], mask[:rows]
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    eager = mt5fn.generate(held, cfg, ids, mask, max_new_tokens=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it really compiled
        compiled = compiled_module.compiled_step("eager", torch.device("cpu"))  # warm the cache entry ...
        compiled_module._compiled[("eager", "default")] = torch.compile(compiled_module._step, backend=recording,
                                                                         fullgraph=True, dynamic=False)
        try:
            got = mt5fn.generate(held, cfg, ids, mask, max_new_tokens=5, compile="eager")
        finally:
            compiled_module._compiled[("eager", "default")] = compiled
    assert torch.equal(got, eager)
    assert len(graphs) == 1
    opaque = {"columns": "mt5fn.columns_linear", "onednn": "mt5fn.onednn_linear",
              "int8-dynamic": "mt5fn.int8_dynamic_linear", "int8": "_weight_int8pack_mm"}[form]
    assert opaque in graphs[0]


def test_under_the_compiler_a_onednn_leaf_looks_strided_so_the_step_boxes_it():
    """The trap ``box_onednn_leaves`` exists for: inside a graph a oneDNN-blocked tensor reports a strided
    layout, so ``linear`` could not tell it from a plain weight."""
    from mt5fn.kernels import box_onednn_leaves
    weight = torch.randn(64, 32)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN")
    blocked = torch.ops.mkldnn._reorder_linear_weight(weight, 3)
    seen = torch.compile(lambda w: torch.tensor(w.layout == torch._mkldnn), backend="eager", fullgraph=True)
    assert not bool(seen(blocked))
    packed = torch.ops.onednn.qlinear_prepack(torch.ones(64, 32, dtype=torch.int8), None)  # (32, 64), blocked
    tree = {"a": [blocked, weight], "b": {"int8_packed": packed, "scale": torch.ones(64)}}
    boxed = box_onednn_leaves(tree)
    assert set(boxed["a"][0]) == {"onednn"} and boxed["a"][0]["onednn"] is blocked and boxed["a"][1] is weight
    assert boxed["b"]["int8_packed"] is packed  # the int8 x int8 form is named by its key already


@pytest.mark.parametrize("bad", ["fast", 1, None, "inductor-max"])
def test_a_bad_compile_argument_is_a_named_error(bad):
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)
    with pytest.raises(ValueError, match="compile must be a bool or one of 'inductor', 'aot_eager', 'eager'"):
        mt5fn.generate(params, cfg, ids, mask, max_new_tokens=3, compile=bad)


def test_slots_round_up_to_a_power_of_two():
    assert [compiled_module.slots_for(n) for n in (1, 32, 33, 64, 100)] == [32, 32, 64, 64, 128]
