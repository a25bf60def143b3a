"""Resource pre-flight: a call whose biggest buffers cannot fit is refused before anything is allocated."""

from __future__ import annotations

import os
import re

import pytest
import torch

import mt5fn
from mt5fn.checks import preflight

CFG = mt5fn.MT5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2)
PARAMS = mt5fn.init_params(CFG)
IDS = torch.randint(0, 40, (2, 5))

SIZE = r"needs about [\d.]+ [kMGTPE]?B \([\d,]+ bytes\)"


@pytest.fixture
def no_allocation(monkeypatch):
    """Fail the test if generate gets as far as running the encoder or building a cache."""
    import mt5fn.decoding._generate as generate_module

    def forbidden(*args, **kwargs):
        raise AssertionError("allocated before the pre-flight refused")

    monkeypatch.setattr(generate_module, "encode", forbidden)
    monkeypatch.setattr(generate_module, "build_cache", forbidden)


def test_huge_max_new_tokens_is_refused_before_the_cache(no_allocation):
    with pytest.raises(ValueError, match=rf"generate: .*max_new_tokens=1000000000000.* {SIZE}.*self-attention K/V cache"):
        mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=10 ** 12)
    with pytest.raises(ValueError, match="max_new_tokens=1000000000000000"):
        mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=10 ** 15, num_beams=2)


def test_long_input_is_refused_before_the_position_bias(no_allocation):
    ids = torch.zeros(1, 10 ** 6, dtype=torch.long)  # 8 MB of ids ask for a (1, H, 1e6, 1e6) bias
    with pytest.raises(ValueError, match=rf"encode: input_ids of shape \(1, 1000000\) {SIZE}.* TB"):
        mt5fn.encode(PARAMS, CFG, ids)
    with pytest.raises(ValueError, match=r"generate: input_ids of shape \(1, 1000000\)"):
        mt5fn.generate(PARAMS, CFG, ids, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"forward: input_ids \(1, 1000000\) and decoder_input_ids \(1, 1\)"):
        mt5fn.forward(PARAMS, CFG, ids, ids[:, :1])
    with pytest.raises(ValueError, match=r"loss: input_ids \(1, 1000000\) and labels \(1, 1\)"):
        mt5fn.loss(PARAMS, CFG, ids, ids[:, :1])


def test_init_cache_and_decode_step_are_bounded():
    hidden = mt5fn.encode(PARAMS, CFG, IDS)
    with pytest.raises(ValueError, match=rf"init_cache: max_length=1000000000000 for 2 row\(s\) {SIZE}"):
        mt5fn.init_cache(PARAMS, CFG, hidden, None, 10 ** 12)
    cache = mt5fn.init_cache(PARAMS, CFG, hidden, None, 4)
    with pytest.raises(ValueError, match=r"decode_step: token_ids of shape \(2, 1\) with a 4-slot cache"):
        with bound(1000):
            mt5fn.decode_step(PARAMS, CFG, cache, IDS[:, :1])


def test_init_params_is_bounded_and_counts_exactly():
    huge = mt5fn.MT5Config(vocab_size=2 ** 31 - 1, d_model=2 ** 20, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=rf"init_params: cfg with [\d,]+ parameters {SIZE}"):
        mt5fn.init_params(huge)
    # The estimate counts the parameters exactly, for every family and tying.
    for cfg in (CFG, CFG.replace(model_type="umt5"), CFG.replace(model_type="t5", feed_forward_proj="relu",
                                                              tie_word_embeddings=True, num_decoder_layers=3)):
        with bound(1), pytest.raises(ValueError) as error:
            mt5fn.init_params(cfg)
        count = int(re.search(r"with ([\d,]+) parameters", str(error.value)).group(1).replace(",", ""))
        assert count == mt5fn.num_params(mt5fn.init_params(cfg))


class bound:
    """Set MT5FN_MAX_BUFFER_BYTES for a block."""

    def __init__(self, value: int | str) -> None:
        self.value = str(value)

    def __enter__(self) -> None:
        self.old = os.environ.get(preflight.ENV_VAR)
        os.environ[preflight.ENV_VAR] = self.value

    def __exit__(self, *exc) -> None:
        if self.old is None:
            os.environ.pop(preflight.ENV_VAR, None)
        else:
            os.environ[preflight.ENV_VAR] = self.old


def test_environment_variable_sets_the_bound():
    with bound(1000):
        with pytest.raises(ValueError, match=r"encode: .*more than the bound of 1 kB \(MT5FN_MAX_BUFFER_BYTES=1000\)"):
            mt5fn.encode(PARAMS, CFG, IDS)
    with bound(10 ** 9):
        assert mt5fn.encode(PARAMS, CFG, IDS).shape == (2, 5, 8)
    for bad in ("lots", "-5", "0", "1.5e9"):
        with bound(bad), pytest.raises(ValueError, match=f"MT5FN_MAX_BUFFER_BYTES must be a positive integer byte "
                                                         f"count, got '{re.escape(bad)}'"):
            mt5fn.encode(PARAMS, CFG, IDS)


def test_default_bound_is_the_machine_memory(monkeypatch):
    monkeypatch.delenv(preflight.ENV_VAR, raising=False)
    limit, source = preflight.buffer_limit("cpu")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < limit <= ram and "this machine's memory" in source
    assert preflight.buffer_limit("meta") == (None, "")  # no memory to bound


def test_training_counts_every_block_of_activations():
    """With autograd keeping activations, each block's scores and FFN stay alive: the estimate grows with
    depth, and activation checkpointing takes it back down."""
    deep = CFG.replace(num_layers=12, num_decoder_layers=12)
    params = mt5fn.init_params(deep)
    ids = torch.randint(0, 40, (4, 64))

    def estimate(requires_grad: bool, checkpointed: bool) -> int:
        tree = mt5fn.tree_map(lambda t: t.requires_grad_(requires_grad), params)
        with bound(1), pytest.raises(ValueError) as error:
            mt5fn.loss(tree, deep, ids, ids, checkpoint_blocks=checkpointed)
        return int(re.search(r"\(([\d,]+) bytes\)", str(error.value)).group(1).replace(",", ""))

    inference, training, checkpointed = estimate(False, False), estimate(True, False), estimate(True, True)
    assert training > 5 * inference and inference < checkpointed < training


def test_under_the_bound_nothing_changes():
    with bound(10 ** 9):
        out = mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=3, num_beams=2)
    assert out.shape[0] == 2


def test_human_readable_sizes():
    assert [preflight.human_bytes(n) for n in (0, 999, 1000, 2_900_000_000_000, 25_300_000_000)] == \
        ["0 B", "999 B", "1 kB", "2.9 TB", "25.3 GB"]
