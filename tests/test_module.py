"""MT5Module: the nn.Module facade over the pytree (names, functional_call, DDP, FSDP2)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

import mt5fn

CFG = mt5fn.MT5Config(model_type="umt5", vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                      num_decoder_layers=1, num_heads=2, relative_attention_num_buckets=8)
IDS = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
DEC = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(1))


def test_named_parameters_are_the_pytree_paths_and_share_storage():
    params = mt5fn.init_params(CFG)
    module = mt5fn.MT5Module(CFG, params)
    flat = mt5fn.flatten_params(params)
    named = dict(module.named_parameters())
    assert set(named) == set(flat)
    assert all(named[path].data_ptr() == flat[path].data_ptr() for path in flat)
    # Parameters require grad, so SDPA may pick another (equally exact) kernel: round-off only.
    torch.testing.assert_close(module(IDS, DEC), mt5fn.forward(params, CFG, IDS, DEC), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.loss(IDS, DEC), mt5fn.loss(params, CFG, IDS, DEC), atol=1e-5, rtol=1e-5)
    assert list(mt5fn.flatten_params(module.params())) == list(flat)


def test_functional_call_and_stack_module_state():
    modules = [mt5fn.MT5Module(CFG, mt5fn.init_params(CFG, seed=s)) for s in range(3)]
    stacked, _ = torch.func.stack_module_state(modules)
    base = mt5fn.MT5Module(CFG, mt5fn.init_params(CFG, seed=9)).to("meta")

    def run(flat_params):
        return torch.func.functional_call(base, flat_params, (IDS, DEC))

    ensemble = torch.func.vmap(run)(stacked)
    for index, module in enumerate(modules):
        torch.testing.assert_close(ensemble[index], module(IDS, DEC), atol=1e-5, rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def single_process_group():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _loss_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def test_ddp_and_fsdp2_wrap_the_module(single_process_group):
    from torch.distributed.fsdp import fully_shard

    params = mt5fn.init_params(CFG, seed=4)
    reference = mt5fn.loss(params, CFG, IDS, DEC)
    expected = mt5fn.flatten_params(torch.func.grad(mt5fn.loss)(params, CFG, IDS, DEC))
    decoder_inputs = mt5fn.shift_right(DEC, CFG)

    ddp = torch.nn.parallel.DistributedDataParallel(mt5fn.MT5Module(CFG, mt5fn.tree_map(torch.clone, params)))
    fsdp = mt5fn.MT5Module(CFG, mt5fn.tree_map(torch.clone, params))
    fully_shard(fsdp)
    for wrapped in (ddp, fsdp):
        loss = _loss_from_logits(wrapped(IDS, decoder_inputs), DEC)
        torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
        loss.backward()
        for name, parameter in wrapped.named_parameters():
            name = name.removeprefix("module.")
            grad = parameter.grad.full_tensor() if hasattr(parameter.grad, "full_tensor") else parameter.grad
            torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)
