"""The fused, chunked head + cross-entropy equals the unfused ``F.cross_entropy``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mt5fn.kernels import _cross_entropy
from mt5fn.kernels import linear_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.1, 30.0])  # 30: random-init logits whose softmax underflows
@pytest.mark.parametrize("chunk_bytes", [4 * 1000 * 3, 1 << 28])  # 3-row chunks, and one chunk
def test_value_and_gradients_equal_unfused(dtype, scale, chunk_bytes, monkeypatch):
    monkeypatch.setattr(_cross_entropy, "CHUNK_BYTES", chunk_bytes)
    generator = torch.Generator().manual_seed(0)
    hidden = (torch.randn(10, 16, generator=generator, dtype=dtype) * scale).requires_grad_()
    weight = torch.randn(1000, 16, generator=generator, dtype=dtype).requires_grad_()
    labels = torch.randint(0, 1000, (10,), generator=generator)
    labels[[2, 7]] = -100
    for reduction in ("mean", "sum"):
        ours = linear_cross_entropy(hidden, weight, labels, reduction=reduction)
        ours_grads = torch.autograd.grad(ours, (hidden, weight))
        ref = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100, reduction=reduction)
        ref_grads = torch.autograd.grad(ref, (hidden, weight))
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(ours, ref, **tol)
        for got, want in zip(ours_grads, ref_grads):
            torch.testing.assert_close(got, want, **tol)


def test_second_backward_is_refused_clearly():
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.randint(0, 50, (4,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="differentiated once per forward"):
        loss.backward()


def test_second_derivative_through_plain_autograd_is_refused_clearly():
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.randint(0, 50, (4,)))
    with pytest.raises(RuntimeError, match="first-order only"):
        torch.autograd.grad(loss, (hidden,), create_graph=True)


def test_torch_func_second_derivatives_take_the_plain_path():
    import mt5fn

    cfg = mt5fn.MT5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    params = mt5fn.init_params(cfg, seed=0, dtype=torch.float64)
    ids, labels = torch.randint(0, 20, (2, 5)), torch.randint(0, 20, (2, 3))

    def loss_of_head(head):
        return mt5fn.loss({**params, "lm_head": head}, cfg, ids, labels)

    def plain_loss_of_head(head):
        logits = mt5fn.forward({**params, "lm_head": head}, cfg, ids, mt5fn.shift_right(labels, cfg))
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    head = params["lm_head"][:, :]
    hessian = torch.func.hessian(loss_of_head)(head)
    torch.testing.assert_close(hessian, torch.func.hessian(plain_loss_of_head)(head))
    assert hessian.abs().sum() > 0
