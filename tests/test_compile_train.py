"""A compiled training step: ``torch.compile(torch.func.grad_and_value(mt5fn.loss), fullgraph=True)``
traces as one graph, compiles once per input shape (new token values, a new ignore pattern or
new weights do not recompile), and returns the eager step's loss and gradients.

Compilations are counted with dynamo's ``CompileCounterWithBackend`` over ``aot_eager`` (the
autograd graph is built exactly as inductor would receive it, without generating C++).
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import mt5fn

CFG = mt5fn.MT5Config(model_type="mt5", vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                      num_decoder_layers=2, num_heads=2, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16)


def batch(seed: int, size: int = 3, source: int = 7, target: int = 5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, CFG.vocab_size, (size, source), generator=g)
    labels = torch.randint(2, CFG.vocab_size, (size, target), generator=g)
    labels[seed % size, -(1 + seed % target):] = -100  # a different ignore pattern each time
    mask = torch.ones(size, source, dtype=torch.long)
    mask[(seed + 1) % size, -(1 + seed % 3):] = 0
    return ids, labels, mask


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_training_step_compiles_once_and_matches_eager():
    params = mt5fn.init_params(CFG, seed=0)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(torch.func.grad_and_value(mt5fn.loss), backend=counter, fullgraph=True)
    eager = torch.func.grad_and_value(mt5fn.loss)
    for seed in range(3):
        ids, labels, mask = batch(seed)
        grads, value = step(params, CFG, ids, labels, mask)
        want_grads, want_value = eager(params, CFG, ids, labels, mask)
        torch.testing.assert_close(value, want_value, rtol=1e-5, atol=1e-6)
        for name, grad in mt5fn.flatten_params(grads).items():
            torch.testing.assert_close(grad, mt5fn.flatten_params(want_grads)[name], rtol=1e-4, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")
        # a training loop updates the weights between steps: new values, same shapes
        params = mt5fn.tree_map(lambda t: t - 0.1, params)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} compilations for one shape"


def test_a_new_shape_compiles_once_more_and_then_is_reused():
    params = mt5fn.init_params(CFG, seed=0)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(torch.func.grad_and_value(mt5fn.loss), backend=counter, fullgraph=True,
                         dynamic=False)
    for seed in range(2):
        step(params, CFG, *batch(seed))
        step(params, CFG, *batch(seed, source=11))
    assert counter.frame_count == 2
