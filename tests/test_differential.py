"""Differential tests: mt5fn against transformers in float32 with eager attention.

Hypothesis draws small configurations across the family (t5 / mt5 / umt5;
relu, gated-gelu, gated-silu and other accepted activations; tied and untied
heads; ``num_heads * d_kv != d_model``; unequal encoder and decoder depths;
small and large ``relative_attention_max_distance``) and padded batches longer
than ``max_distance``. Logits, encoder outputs and the loss must match
transformers' ``{T5,MT5,UMT5}ForConditionalGeneration`` to 1e-4 absolute.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mt5fn
from reference import hf_model

ATOL = 1e-4


@st.composite
def configs(draw) -> mt5fn.MT5Config:
    model_type = draw(st.sampled_from(["t5", "mt5", "umt5"]))
    num_heads = draw(st.integers(1, 4))
    buckets = draw(st.sampled_from([4, 8, 32]))
    return mt5fn.MT5Config(
        model_type=model_type,
        vocab_size=draw(st.integers(8, 80)),
        d_model=draw(st.sampled_from([8, 16, 24])),
        d_kv=draw(st.integers(2, 9)),
        d_ff=draw(st.sampled_from([8, 20, 32])),
        num_layers=draw(st.integers(1, 3)),
        num_decoder_layers=draw(st.integers(1, 3)),
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
        # max_distance must exceed the exact region (buckets // 2), or the log bins degenerate
        # (transformers then indexes out of its table for long sequences).
        relative_attention_max_distance=buckets // 2 + draw(st.sampled_from([1, 3, 12, 100])),
        feed_forward_proj=draw(st.sampled_from(
            ["relu", "gated-gelu", "gated-silu", "gelu", "gated-relu", "gated-gelu_new", "silu"])),
        tie_word_embeddings=draw(st.booleans()),
        layer_norm_epsilon=draw(st.sampled_from([1e-6, 1e-3])),
    )


def _mask(draw, batch: int, length: int) -> torch.Tensor:
    """A 0/1 mask with at least one kept position per row; left, right or inner padding."""
    rows = []
    for _ in range(batch):
        keep = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        if not any(keep):
            keep[draw(st.integers(0, length - 1))] = True
        rows.append(keep)
    return torch.tensor(rows, dtype=torch.long)


@st.composite
def cases(draw):
    cfg = draw(configs())
    batch = draw(st.integers(1, 3))
    src, tgt = draw(st.integers(1, 30)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch, src), generator=gen)
    dec = torch.randint(0, cfg.vocab_size, (batch, tgt), generator=gen)
    mask = _mask(draw, batch, src) if draw(st.booleans()) else None
    dec_mask = _mask(draw, batch, tgt) if draw(st.booleans()) else None
    return cfg, seed, ids, dec, mask, dec_mask


@settings(max_examples=20)
@given(cases())
def test_logits_and_encoder_match_transformers(case):
    cfg, seed, ids, dec, mask, dec_mask = case
    params = mt5fn.init_params(cfg, seed=seed)
    model = hf_model(cfg, params)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        logits = mt5fn.forward(params, cfg, ids, dec, mask, dec_mask)
        encoded = mt5fn.encode(params, cfg, ids, mask)
    torch.testing.assert_close(encoded, ref.encoder_last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, ref.logits, atol=ATOL, rtol=0)


@settings(max_examples=10)
@given(cases(), st.data())
def test_loss_matches_transformers(case, data):
    cfg, seed, ids, labels, mask, _ = case
    ignored = torch.tensor(data.draw(st.lists(st.booleans(), min_size=labels.numel(), max_size=labels.numel())))
    ignored = ignored.view_as(labels)
    ignored[:, 0] = False  # keep at least one target per batch so the mean is defined
    labels = labels.masked_fill(ignored, -100)
    params = mt5fn.init_params(cfg, seed=seed)
    model = hf_model(cfg, params)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = mt5fn.loss(params, cfg, ids, labels, mask)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_bucket_function_equals_transformers_on_a_wide_range():
    from transformers.models.t5.modeling_t5 import T5Attention

    distances = torch.arange(-5000, 5001)
    for bidirectional in (True, False):
        for buckets, max_distance in ((32, 128), (8, 7), (4, 4), (64, 1000), (16, 20), (32, 2)):
            ours = mt5fn.functional.relative_position_bucket(distances, bidirectional, buckets, max_distance)
            ref = T5Attention._relative_position_bucket(distances, bidirectional, buckets, max_distance)
            assert torch.equal(ours, ref), (bidirectional, buckets, max_distance)


def test_gradients_match_transformers():
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=40, d_model=16, d_kv=6, d_ff=24, num_layers=2,
                          num_decoder_layers=1, num_heads=3, relative_attention_num_buckets=8,
                          relative_attention_max_distance=6)  # 32 buckets with distance 6 is refused
    params = mt5fn.init_params(cfg, seed=3)
    model = hf_model(cfg, params)
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    grads = torch.func.grad(mt5fn.loss)(params, cfg, ids, labels, mask)
    ours = mt5fn.to_hf_state_dict(grads, cfg)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(ours[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)
