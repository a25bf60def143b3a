"""Bad input fails at the public function with a message naming the argument and value."""

from __future__ import annotations

import pytest
import torch

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
PARAMS = mt5fn.init_params(CFG)
IDS = torch.randint(0, 30, (2, 5))
DEC = torch.randint(0, 30, (2, 4))


@pytest.mark.parametrize("bad,value", [(30, "30"), (-1, "-1"), (10**6, "1000000")])
def test_ids_out_of_range(bad, value):
    ids = IDS.clone()
    ids[1, 3] = bad
    for call in (lambda: mt5fn.encode(PARAMS, CFG, ids),
                 lambda: mt5fn.forward(PARAMS, CFG, ids, DEC),
                 lambda: mt5fn.loss(PARAMS, CFG, ids, DEC)):
        with pytest.raises(ValueError, match=rf"input_ids must lie in \[0, vocab_size=30\).*got value {value}"):
            call()
    with pytest.raises(ValueError, match=f"decoder_input_ids .*got value {value}"):
        mt5fn.forward(PARAMS, CFG, IDS, ids)


def test_labels_accept_ignore_index_but_no_other_negative():
    labels = DEC.clone()
    labels[0, 2:] = -100
    mt5fn.loss(PARAMS, CFG, IDS, labels)
    labels[1, 0] = -5
    with pytest.raises(ValueError, match="labels .*-100.*got value -5"):
        mt5fn.loss(PARAMS, CFG, IDS, labels)


def test_float_and_misshaped_ids():
    with pytest.raises(TypeError, match="input_ids must hold integer token ids, got dtype torch.float32"):
        mt5fn.encode(PARAMS, CFG, IDS.float())
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor"):
        mt5fn.encode(PARAMS, CFG, [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, length\), got shape \(5,\)"):
        mt5fn.encode(PARAMS, CFG, IDS[0])
    with pytest.raises(ValueError, match="at least one token"):
        mt5fn.encode(PARAMS, CFG, IDS[:, :0])


def test_masks_must_match_their_ids():
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 5\), got shape \(2, 4\)"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"decoder_attention_mask .* got shape \(2, 5\)"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, decoder_attention_mask=torch.ones(2, 5))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        mt5fn.encode(PARAMS, CFG, IDS, attention_mask=[[1] * 5] * 2)


def test_batch_sizes_must_agree():
    with pytest.raises(ValueError, match="decoder_input_ids has batch size 3 but input_ids has 2"):
        mt5fn.forward(PARAMS, CFG, IDS, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has batch size 1 but input_ids has 2"):
        mt5fn.loss(PARAMS, CFG, IDS, DEC[:1])


def test_config_and_params_types():
    with pytest.raises(TypeError, match="cfg must be an MT5Config, got dict"):
        mt5fn.forward(PARAMS, {"d_model": 8}, IDS, DEC)
    with pytest.raises(TypeError, match="params must be the mt5fn parameter pytree"):
        mt5fn.forward([], CFG, IDS, DEC)
    with pytest.raises(ValueError, match="dropout_rate must be a float in \\[0, 1\\), got 1.5"):
        mt5fn.forward(PARAMS, CFG, IDS, DEC, dropout_rate=1.5)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'none'"):
        mt5fn.loss(PARAMS, CFG, IDS, DEC, reduction="none")


def test_validation_stays_out_of_transforms():
    # Value checks must not call bool() on traced tensors: grad and vmap over params work.
    grads = torch.func.grad(mt5fn.loss)(PARAMS, CFG, IDS, DEC)
    assert grads["shared"].shape == PARAMS["shared"].shape
    stacked = mt5fn.tree_map(lambda t: torch.stack([t, t]), PARAMS)
    logits = torch.func.vmap(mt5fn.forward, in_dims=(0, None, None, None))(stacked, CFG, IDS, DEC)
    assert logits.shape == (2, 2, 4, 30)
