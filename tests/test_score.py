"""``mt5fn.score`` on examples: ranking candidates, float32 for half models, grad / vmap, bad input."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=12, num_layers=2, num_heads=2, model_type="mt5")
PARAMS = mt5fn.init_params(CFG, seed=0)
IDS = torch.randint(2, 40, (3, 6), generator=torch.Generator().manual_seed(0))


def test_the_greedy_output_outranks_other_candidates():
    """Greedy decoding picks the arg-max at every step, so for a single-step output it is the best candidate."""
    first = mt5fn.generate(PARAMS, CFG, IDS[:1], max_new_tokens=1, min_new_tokens=1)[0, 1]
    candidates = torch.arange(2, 12)[:, None]  # 10 one-token candidates
    candidates[0, 0] = first
    scores = mt5fn.score(PARAMS, CFG, IDS[:1].expand(10, -1), candidates)
    assert int(scores.sequence.argmax()) == 0


def test_half_precision_models_score_in_float32():
    half = mt5fn.tree_map(lambda t: t.to(torch.bfloat16), PARAMS)
    labels = torch.tensor([[5, 6, -100], [7, -100, -100], [3, 4, 1]])
    scores = mt5fn.score(half, CFG, IDS, labels)
    assert scores.sequence.dtype == scores.tokens.dtype == torch.float32
    reference = mt5fn.score(PARAMS, CFG, IDS, labels)
    torch.testing.assert_close(scores.sequence, reference.sequence, rtol=0.05, atol=0.1)


def test_grad_and_vmap():
    labels = torch.tensor([[5, 6, -100], [7, 8, 9], [3, 4, 1]])
    g = grad(lambda p: mt5fn.score(p, CFG, IDS, labels).sequence.sum())(PARAMS)
    leaves = mt5fn.tree_map(lambda leaf: leaf.detach().requires_grad_(True), PARAMS)
    (-mt5fn.loss(leaves, CFG, IDS, labels, reduction="sum")).backward()
    torch.testing.assert_close(g["shared"], leaves["shared"].grad, rtol=1e-4, atol=1e-5)
    rows = vmap(lambda i, y: mt5fn.score(PARAMS, CFG, i[None], y[None]).sequence[0])(IDS, labels)
    torch.testing.assert_close(rows, mt5fn.score(PARAMS, CFG, IDS, labels).sequence, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels, kwargs, error, match", [
    (torch.tensor([[5, 40]] * 3), {}, ValueError, r"labels must lie in \[0, vocab_size=40\) \(or -100 to ignore\)"),
    (torch.tensor([[5, 6]] * 2), {}, ValueError, r"labels has batch size 2 but input_ids has 3"),
    (torch.tensor([[5.0, 6.0]] * 3), {}, TypeError, r"labels must hold integer token ids"),
    (torch.tensor([[5, 6]] * 3), dict(attention_mask=torch.ones(3, 2)), ValueError,
     r"attention_mask must have the shape of input_ids \(3, 6\)"),
    (torch.tensor([[5, 6]] * 3), dict(decoder_attention_mask=torch.ones(3, 3)), ValueError,
     r"decoder_attention_mask must have the shape of labels \(3, 2\)"),
])
def test_bad_input(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        mt5fn.score(PARAMS, CFG, IDS, labels, **kwargs)
