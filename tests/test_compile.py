"""``torch.compile(fullgraph=True)`` of the pure functions: one graph, no recompiles, eager numbers.

Dynamo must trace ``mt5fn.forward`` (validation included: value checks step
aside while compiling) into a single graph with no break, and a second call
with new values of the same shapes must reuse it. The forward checks use the
"eager" backend (Dynamo's capture, run as traced) and the loss check
"aot_eager" (AOTAutograd builds the joint forward/backward graph), so frame
counts and numbers are checked without code generation. A real inductor build
of even a tiny model took 36 s of CPU (101 s wall on the shared 2-core box),
too slow for the suite; it is left to the benchmarks.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

import mt5fn

CONFIGS = {
    "mt5-gated-gelu-untied": mt5fn.MT5Config(
        vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=1, num_heads=3,
        relative_attention_num_buckets=8, relative_attention_max_distance=6, model_type="mt5"),
    "t5-relu-tied": mt5fn.MT5Config(
        vocab_size=48, d_model=12, d_kv=4, d_ff=16, num_layers=1, num_heads=3,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="relu", tie_word_embeddings=True, model_type="t5"),
    "umt5-gated-silu": mt5fn.MT5Config(
        vocab_size=40, d_model=16, d_kv=8, d_ff=16, num_layers=2, num_heads=2,
        relative_attention_num_buckets=6, relative_attention_max_distance=5,
        feed_forward_proj="gated-silu", model_type="umt5"),
}


def _batch(cfg: mt5fn.MT5Config, seed: int):
    """Ids (2, 9) / (2, 7) and right-padded masks; same shapes for every seed."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (2, 9), generator=generator)  # (B, S)
    dec = torch.randint(0, cfg.vocab_size, (2, 7), generator=generator)  # (B, T)
    mask = torch.ones_like(ids)
    mask[1, 5 + seed % 3:] = 0
    dec_mask = torch.ones_like(dec)
    dec_mask[0, 4 + seed % 2:] = 0
    return ids, dec, mask, dec_mask


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_compiles_to_one_graph_without_recompiling(name):
    """fullgraph=True succeeds (no graph break), three calls with new values but the same
    shapes compile exactly one frame, and the compiled logits equal eager ones."""
    cfg = CONFIGS[name]
    params = mt5fn.init_params(cfg, seed=1)
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(mt5fn.forward, backend=counter, fullgraph=True)
    for seed in range(3):
        batch = _batch(cfg, seed)
        torch.testing.assert_close(compiled(params, cfg, *batch), mt5fn.forward(params, cfg, *batch),
                                   rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert not counters["graph_break"], dict(counters["graph_break"])
    # Changing only the weights' values is no reason to recompile either.
    other = mt5fn.init_params(cfg, seed=2)
    batch = _batch(cfg, 0)
    torch.testing.assert_close(compiled(other, cfg, *batch), mt5fn.forward(other, cfg, *batch),
                               rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1


def test_compiled_loss_gradients_equal_eager():
    """``torch.compile(loss, fullgraph=True)`` traces in one graph and its backward gives
    the eager gradients (the training step's compiled path)."""
    cfg = CONFIGS["mt5-gated-gelu-untied"]
    params = mt5fn.init_params(cfg, seed=3)
    ids, dec, mask, _ = _batch(cfg, 0)
    labels = dec.masked_fill(dec % 5 == 0, -100)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(mt5fn.loss, backend=counter, fullgraph=True)

    def grads(fn):
        leaves = mt5fn.tree_map(lambda leaf: leaf.detach().clone().requires_grad_(True), params)
        value = fn(leaves, cfg, ids, labels, mask)
        value.backward()
        return value.detach(), mt5fn.flatten_params(mt5fn.tree_map(lambda leaf: leaf.grad, leaves))

    compiled_value, compiled_grads = grads(compiled)
    eager_value, eager_grads = grads(mt5fn.loss)
    assert counter.frame_count == 1
    torch.testing.assert_close(compiled_value, eager_value, rtol=1e-5, atol=1e-5)
    for path, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[path], grad, rtol=1e-5, atol=1e-5,
                                   msg=lambda m, p=path: f"{p}: {m}")
