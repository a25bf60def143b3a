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
    yield
    torch._dynamo.reset()


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


def test_a_tree_with_onednn_packed_leaves_is_decoded_eagerly_with_the_reason():
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=300, d_model=256, d_kv=32, d_ff=512, num_layers=1,
                          num_heads=8)
    params = mt5fn.init_params(cfg, seed=0)
    prepared = mt5fn.prepare_decoding(params, cfg, rows=3, min_numel=0)
    if not compiled_module.has_packed_leaves(prepared):
        pytest.skip("this torch build has no oneDNN: prepare_decoding made no packed leaf")
    ids, mask = _batch(cfg)
    with pytest.warns(UserWarning, match="oneDNN-packed leaves"):
        out = mt5fn.generate(prepared, cfg, ids, mask, max_new_tokens=4, compile="eager")
    assert torch.equal(out, mt5fn.generate(prepared, cfg, ids, mask, max_new_tokens=4))


@pytest.mark.parametrize("bad", ["fast", 1, None, "inductor-max"])
def test_a_bad_compile_argument_is_a_named_error(bad):
    cfg = CONFIGS["mt5"]
    params = mt5fn.init_params(cfg, seed=0)
    ids, mask = _batch(cfg)
    with pytest.raises(ValueError, match="compile must be a bool or one of 'inductor', 'aot_eager', 'eager'"):
        mt5fn.generate(params, cfg, ids, mask, max_new_tokens=3, compile=bad)


def test_slots_round_up_to_a_power_of_two():
    assert [compiled_module.slots_for(n) for n in (1, 32, 33, 64, 100)] == [32, 32, 64, 64, 128]
