"""The pure train step, the optimizer bridge and the lr schedules (mt5fn.training)."""

import math

import pytest
import torch

import mt5fn
from mt5fn.data import collate
from mt5fn.training import (apply_gradients, global_norm, lr_factor, make_optimizer, make_scheduler,
                            train_step)

CFG = mt5fn.MT5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16)


def _examples(seed: int, count: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(count):
        source = torch.randint(2, CFG.vocab_size, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen)
        target = torch.randint(2, CFG.vocab_size, (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen)
        pairs.append((source, target))
    return pairs


def _autograd_grads(params, batch, cfg=CFG, **kw):
    leaves = mt5fn.tree_map(lambda t: t.detach().clone().requires_grad_(), params)
    value = mt5fn.loss(leaves, cfg, batch["input_ids"], batch["labels"], batch["attention_mask"], **kw)
    value.backward()
    return value.detach(), mt5fn.tree_map(lambda t: t.grad, leaves)


def _assert_trees_close(actual, expected, **tol):
    flat_a, flat_e = mt5fn.flatten_params(actual), mt5fn.flatten_params(expected)
    assert list(flat_a) == list(flat_e)
    for path in flat_a:
        torch.testing.assert_close(flat_a[path], flat_e[path], msg=lambda m, p=path: f"{p}: {m}", **tol)


TIED_T5 = mt5fn.MT5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=2,
                          num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                          feed_forward_proj="relu", tie_word_embeddings=True, model_type="t5")


@pytest.mark.parametrize("cfg", [CFG, TIED_T5], ids=["mt5", "t5-tied"])
def test_grads_equal_autograd_on_loss(cfg):
    params = mt5fn.init_params(cfg, seed=0)
    batch = collate(_examples(1, 3))
    result = train_step(params, cfg, batch)
    loss, grads = _autograd_grads(params, batch, cfg)
    torch.testing.assert_close(result.loss, loss, rtol=1e-6, atol=1e-6)
    _assert_trees_close(result.grads, grads, rtol=1e-5, atol=1e-7)
    assert result.num_tokens == int((batch["labels"] != -100).sum())
    torch.testing.assert_close(result.grad_norm, global_norm(grads))


def test_accumulation_equals_one_big_batch():
    params = mt5fn.init_params(CFG, seed=1)
    first, second = _examples(2, 2), _examples(3, 3)  # uneven token counts: weighting matters
    whole = train_step(params, CFG, collate(first + second))
    split = train_step(params, CFG, [collate(first), collate(second)])
    assert split.num_tokens == whole.num_tokens
    torch.testing.assert_close(split.loss, whole.loss, rtol=1e-6, atol=1e-6)
    # padding changes the reduction shapes: float32 round-off on grads of size ~1e-2
    _assert_trees_close(split.grads, whole.grads, rtol=1e-5, atol=1e-6)


def test_clipping_scales_to_max_norm_and_reports_the_raw_norm():
    params = mt5fn.init_params(CFG, seed=2)
    batch = collate(_examples(4, 2))
    free = train_step(params, CFG, batch)
    assert free.grad_norm > 0.5
    clipped = train_step(params, CFG, batch, max_grad_norm=0.5)
    torch.testing.assert_close(clipped.grad_norm, free.grad_norm)  # reported before clipping
    torch.testing.assert_close(global_norm(clipped.grads), torch.tensor(0.5), rtol=1e-5, atol=1e-6)
    scale = 0.5 / (free.grad_norm + 1e-6)
    _assert_trees_close(clipped.grads, mt5fn.tree_map(lambda g: g * scale, free.grads), rtol=1e-6, atol=1e-9)
    loose = train_step(params, CFG, batch, max_grad_norm=1e6)  # above the norm: unchanged
    _assert_trees_close(loose.grads, free.grads, rtol=0, atol=0)


def test_train_step_is_pure():
    params = mt5fn.init_params(CFG, seed=3)
    before = {k: v.clone() for k, v in mt5fn.flatten_params(params).items()}
    train_step(params, CFG, collate(_examples(5, 2)), max_grad_norm=0.1)
    for path, leaf in mt5fn.flatten_params(params).items():
        assert torch.equal(leaf, before[path]) and leaf.grad is None


def test_dropout_reproducible_from_generator():
    params = mt5fn.init_params(CFG, seed=4)
    batch = collate(_examples(6, 2))

    def run(seed):
        return train_step(params, CFG, batch, dropout_rate=0.3, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.loss, b.loss)
    _assert_trees_close(a.grads, b.grads, rtol=0, atol=0)
    assert not torch.equal(a.loss, c.loss)
    assert not torch.equal(a.loss, train_step(params, CFG, batch).loss)  # dropout is on
    # the same masks as autograd on mt5fn.loss drawing from the same generator state
    loss, grads = _autograd_grads(params, batch, dropout_rate=0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.loss, loss, rtol=1e-6, atol=1e-6)
    _assert_trees_close(a.grads, grads, rtol=1e-5, atol=1e-7)


def test_bfloat16_autocast_equals_amp_autograd():
    params = mt5fn.init_params(CFG, seed=5)
    batch = collate(_examples(7, 2))
    mixed = train_step(params, CFG, batch, autocast_dtype=torch.bfloat16)
    assert mixed.loss.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in mt5fn.flatten_params(mixed.grads).values())
    leaves = mt5fn.tree_map(lambda t: t.detach().clone().requires_grad_(), params)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch.amp's recipe: autocast the forward only
        value = mt5fn.loss(leaves, CFG, batch["input_ids"], batch["labels"], batch["attention_mask"])
    value.backward()
    torch.testing.assert_close(mixed.loss, value.detach().float(), rtol=0, atol=0)
    _assert_trees_close(mixed.grads, mt5fn.tree_map(lambda t: t.grad, leaves), rtol=0, atol=0)
    exact = train_step(params, CFG, batch)
    assert abs(float(mixed.loss) - float(exact.loss)) < 0.05 * float(exact.loss)


def test_optimizer_shares_the_pytree_tensors():
    params = mt5fn.init_params(CFG, seed=6)
    for name in ("adamw", "adafactor"):
        opt = make_optimizer(params, name, lr=1e-2)
        leaves = mt5fn.flatten_params(params)
        names = [n for group in opt.param_groups for n in group["param_names"]]
        assert sorted(names) == sorted(leaves)
        before = {k: v.clone() for k, v in leaves.items()}
        result = train_step(params, CFG, collate(_examples(8, 2)))
        apply_gradients(opt, params, result.grads)
        for path, leaf in mt5fn.flatten_params(params).items():
            assert leaf is leaves[path] and leaf.grad is None
            assert not torch.equal(leaf, before[path]), path


def test_adamw_step_matches_torch_on_the_same_grads():
    params = mt5fn.init_params(CFG, seed=7)
    twin = mt5fn.tree_map(lambda t: t.clone(), params)
    result = train_step(params, CFG, collate(_examples(9, 2)))
    apply_gradients(make_optimizer(params, "adamw", lr=1e-3, weight_decay=0.1), params, result.grads)
    flat_twin, flat_grads = mt5fn.flatten_params(twin), mt5fn.flatten_params(result.grads)
    matrices = [t for t in flat_twin.values() if t.dim() > 1]
    vectors = [t for t in flat_twin.values() if t.dim() <= 1]
    reference = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                   {"params": vectors, "weight_decay": 0.0}], lr=1e-3)
    for path, leaf in flat_twin.items():
        leaf.grad = flat_grads[path].clone()
    reference.step()
    _assert_trees_close(params, twin, rtol=0, atol=0)


def test_bad_inputs_are_named():
    params = mt5fn.init_params(CFG, seed=8)
    batch = collate(_examples(10, 1))
    with pytest.raises(ValueError, match="micro_batches"):
        train_step(params, CFG, [])
    with pytest.raises(ValueError, match="no target tokens"):
        train_step(params, CFG, {**batch, "labels": torch.full_like(batch["labels"], -100)})
    with pytest.raises(ValueError, match="max_grad_norm"):
        train_step(params, CFG, batch, max_grad_norm=0)
    with pytest.raises(ValueError, match="name must be one of"):
        make_optimizer(params, "sgd")
    other = mt5fn.tree_map(lambda t: t.clone(), params)
    with pytest.raises(ValueError, match="not a tensor this optimizer owns"):
        apply_gradients(make_optimizer(params), other, mt5fn.tree_map(torch.zeros_like, params))
    with pytest.raises(ValueError, match="total_steps"):
        make_scheduler(make_optimizer(params), "cosine", warmup_steps=10)


def _lrs(kind, steps, **kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = make_scheduler(opt, kind, **kw)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_schedule_shapes():
    assert _lrs("constant", 5) == [2.0] * 5
    assert _lrs("constant", 6, warmup_steps=4) == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]

    inv = _lrs("inverse_sqrt", 20, warmup_steps=4)
    assert inv[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert inv[4:] == pytest.approx([2.0 * math.sqrt(4 / (s + 1)) for s in range(4, 20)])
    assert all(a > b for a, b in zip(inv[3:], inv[4:]))  # strictly decaying after warmup

    cos = _lrs("cosine", 14, warmup_steps=4, total_steps=12)
    assert cos[:5] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    assert cos[8] == pytest.approx(1.0)  # half way through the decay
    assert all(a > b for a, b in zip(cos[4:12], cos[5:12]))
    assert cos[12:] == pytest.approx([0.0, 0.0])  # done: stays at the floor
    assert lr_factor("cosine", 0, 10, final_ratio=0.1)(10) == pytest.approx(0.1)


def test_scheduler_state_round_trips():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, "inverse_sqrt", warmup_steps=3)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched2 = make_scheduler(opt2, "inverse_sqrt", warmup_steps=3)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_activation_checkpointing_gives_the_same_gradients():
    """checkpoint_blocks recomputes each block in the backward, replaying the same dropout masks."""
    params = mt5fn.init_params(CFG, seed=11)
    batches = [collate(_examples(12, 3)), collate(_examples(13, 2))]

    def run(checkpoint):
        return train_step(params, CFG, batches, dropout_rate=0.2, generator=torch.Generator().manual_seed(4),
                          max_grad_norm=1.0, checkpoint_blocks=checkpoint)

    plain, recomputed = run(False), run(True)
    torch.testing.assert_close(recomputed.loss, plain.loss, rtol=0, atol=0)
    _assert_trees_close(recomputed.grads, plain.grads, rtol=0, atol=0)
    assert torch.equal(recomputed.grad_norm, plain.grad_norm)


def test_train_step_equals_torch_func_grad():
    """The step uses plain autograd (leaner); torch.func.grad_and_value of the same loss agrees."""
    params = mt5fn.init_params(CFG, seed=12)
    batch = collate(_examples(14, 3))
    tokens = int((batch["labels"] != -100).sum())

    def mean_loss(p):
        return mt5fn.loss(p, CFG, batch["input_ids"], batch["labels"], batch["attention_mask"],
                          reduction="sum").float() / tokens

    grads, value = torch.func.grad_and_value(mean_loss)(params)
    result = train_step(params, CFG, batch)
    torch.testing.assert_close(result.loss, value, rtol=0, atol=0)
    _assert_trees_close(result.grads, grads, rtol=1e-6, atol=1e-9)


def test_a_trainable_subset_gets_gradients_and_optimizer_state_alone():
    params = mt5fn.init_params(CFG, seed=13)
    batch = collate(_examples(15, 2))

    def attention_only(path):
        return ".attn." in path or ".self_attn." in path

    result = train_step(params, CFG, batch, trainable=attention_only)
    flat = mt5fn.flatten_params(result.grads)
    assert flat and all(attention_only(path) for path in flat)
    assert len(result.grads["encoder"]["blocks"]) == CFG.num_layers  # lists keep their length
    full = mt5fn.flatten_params(train_step(params, CFG, batch).grads)  # the same step, every leaf trained
    for path, grad in flat.items():
        # float32 round-off only: with the position-bias tables frozen, attention takes SDPA instead of
        # the plain softmax it uses when the bias needs a gradient
        torch.testing.assert_close(grad, full[path], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.grad_norm, global_norm(result.grads))

    optimizer = make_optimizer(params, "adamw", lr=1e-2, trainable=attention_only)
    names = [n for group in optimizer.param_groups for n in group["param_names"]]
    assert sorted(names) == sorted(flat)
    before = {k: v.clone() for k, v in mt5fn.flatten_params(params).items()}
    apply_gradients(optimizer, params, result.grads)
    for path, leaf in mt5fn.flatten_params(params).items():
        assert torch.equal(leaf, before[path]) != (path in flat), path  # only the subset moved
    assert len(optimizer.state) == len(flat)  # no Adam moments for frozen leaves
    with pytest.raises(ValueError, match="exactly the optimizer's leaves"):
        apply_gradients(optimizer, params, train_step(params, CFG, batch).grads)
    with pytest.raises(ValueError, match="selects no parameter path"):
        train_step(params, CFG, batch, trainable=lambda path: False)
    with pytest.raises(TypeError, match="trainable must be"):
        train_step(params, CFG, batch, trainable=3)


def test_lora_adapters_train_alone():
    """trainable=<adapter pytree>: gradients of the A / B factors only (the base weights and the
    adapters' alpha / dropout settings are frozen), equal to torch.func.grad through lora.apply."""
    params = mt5fn.init_params(CFG, seed=14)
    adapters = mt5fn.lora.init(params, CFG, rank=2, alpha=4.0, targets=("q", "v", "wo"), seed=3)
    adapters = mt5fn.tree_map(lambda t: t + 0.01 if t.dim() == 2 else t, adapters)  # B != 0: all grads flow
    batch = collate(_examples(16, 3))
    result = train_step(params, CFG, batch, trainable=adapters)
    flat = mt5fn.flatten_params(result.grads)
    factors = {p for p in mt5fn.flatten_params(adapters) if mt5fn.lora.is_trainable(p)}
    assert set(flat) == factors and "alpha" not in flat
    tokens = int((batch["labels"] != -100).sum())

    def loss_of(ad):
        return mt5fn.loss(mt5fn.lora.apply(params, ad, CFG), CFG, batch["input_ids"], batch["labels"],
                          batch["attention_mask"], reduction="sum") / tokens

    expected = mt5fn.flatten_params(torch.func.grad(loss_of)(adapters))
    for path in factors:
        torch.testing.assert_close(flat[path], expected[path], rtol=1e-5, atol=1e-7)
    optimizer = make_optimizer(adapters, "adamw", lr=1e-2, trainable=mt5fn.lora.is_trainable)
    alpha = adapters["alpha"].clone()
    apply_gradients(optimizer, adapters, result.grads)
    assert torch.equal(adapters["alpha"], alpha) and len(optimizer.state) == len(factors)
