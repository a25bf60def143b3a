"""Overfit test: the train step + AdamW drive a tiny mT5's loss on fixed batches to ~0.

If the loss, the gradients or the optimizer bridge were wrong (a sign, a
missing shift, a gradient that never reaches a leaf), a tiny model could not
memorise a handful of span-corruption examples.
"""

import torch

import mt5fn
from mt5fn.data import collate, span_corruption
from mt5fn.training import apply_gradients, make_optimizer, make_scheduler, train_step

CFG = mt5fn.MT5Config(vocab_size=48, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)


def _batches() -> list:
    gen = torch.Generator().manual_seed(0)
    pairs = [span_corruption(torch.randint(2, 40, (12,), generator=gen), vocab_size=CFG.vocab_size,
                             noise_density=0.3, mean_noise_span_length=2.0, generator=gen) for _ in range(8)]
    return [collate(pairs[:4]), collate(pairs[4:])]


def test_tiny_model_memorises_fixed_batches():
    params = mt5fn.init_params(CFG, seed=0)
    optimizer = make_optimizer(params, "adamw", lr=1e-2)
    scheduler = make_scheduler(optimizer, "constant", warmup_steps=2)
    batches = _batches()
    losses = []
    for _ in range(150):  # about 15 steps suffice; the cap only bounds a failing run
        result = train_step(params, CFG, batches, max_grad_norm=1.0)  # both batches, accumulated
        apply_gradients(optimizer, params, result.grads)
        scheduler.step()
        losses.append(float(result.loss))
        if losses[-1] < 0.01:
            break
    final = float(train_step(params, CFG, batches).loss)
    assert losses[0] > 3.0, losses[0]  # starts far above log(vocab): a fresh model knows nothing
    assert final < 0.05, (final, losses[-5:], len(losses))


def test_adafactor_also_learns():
    params = mt5fn.init_params(CFG, seed=1)
    optimizer = make_optimizer(params, "adafactor", lr=1e-2)
    batch = _batches()[0]
    first = float(train_step(params, CFG, batch).loss)
    for _ in range(20):
        apply_gradients(optimizer, params, train_step(params, CFG, batch).grads)
    assert float(train_step(params, CFG, batch).loss) < 0.5 * first
