"""``mt5fn.generate`` against transformers' ``generate`` on the same weights: identical token ids.

Random tiny t5 / mt5 / umt5 models, float32, eager attention; a padded batch.
The EOS row of the head is scaled up so that sequences end at different
steps and the per-row stop, the padding after EOS and the beam-search
finished set are all exercised. Compared modulo transformers' fill: its beam
search writes EOS (not pad) after a finished hypothesis, because its pad id 0
reads as "no pad" there (see DESIGN.md); mt5fn pads.

Sampling is compared too: transformers draws from torch's global generator,
mt5fn from the generator passed in; seeded alike, they draw the same tokens.
"""

from __future__ import annotations

import pytest
import torch

import mt5fn
from reference import hf_model

MAX_NEW = 9

SETTINGS = [
    pytest.param(dict(), id="greedy"),
    pytest.param(dict(min_new_tokens=4), id="greedy-min-new"),
    pytest.param(dict(repetition_penalty=1.6), id="greedy-repetition"),
    pytest.param(dict(no_repeat_ngram_size=2), id="greedy-ngram"),
    pytest.param(dict(num_beams=3), id="beam"),
    pytest.param(dict(num_beams=3, length_penalty=0.6, num_return_sequences=3), id="beam-lp0.6-return3"),
    pytest.param(dict(num_beams=4, length_penalty=2.0, early_stopping=True, num_return_sequences=2),
                 id="beam-early-true"),
    pytest.param(dict(num_beams=4, length_penalty=-0.5, early_stopping=False, num_return_sequences=2),
                 id="beam-early-false"),
    pytest.param(dict(num_beams=3, length_penalty=1.5, early_stopping="never", num_return_sequences=2),
                 id="beam-early-never"),
    pytest.param(dict(num_beams=2, repetition_penalty=1.4, no_repeat_ngram_size=2, min_new_tokens=3),
                 id="beam-processors"),
]


def _model(model_type: str, seed: int, decoder_layers: int = 2):
    cfg = mt5fn.MT5Config(vocab_size=48, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                          num_decoder_layers=decoder_layers, num_heads=3, model_type=model_type,
                          feed_forward_proj="relu" if model_type == "t5" else "gated-gelu",
                          tie_word_embeddings=model_type == "t5", dropout_rate=0.0)
    params = mt5fn.init_params(cfg, seed=seed)
    head = params.get("lm_head", params["shared"])
    head[cfg.eos_token_id] *= 2.5  # random tiny models rarely end otherwise
    return cfg, params


def _inputs(cfg: mt5fn.MT5Config, seed: int):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, cfg.vocab_size, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # right padding
    mask[2, 6:] = 0
    return ids, mask


def _pad_after_eos(sequences: torch.Tensor, cfg: mt5fn.MT5Config) -> torch.Tensor:
    """transformers' output with everything after each row's first generated EOS set to pad."""
    out = sequences.clone()
    generated = out[:, 1:]
    seen = (generated == cfg.eos_token_id).long().cumsum(1)
    after = (seen - (generated == cfg.eos_token_id).long()) > 0  # strictly after the first EOS
    generated[after] = cfg.pad_token_id
    return out


def _reference(model, ids, mask, **kwargs):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, **kwargs)


@pytest.fixture(scope="module", params=["t5", "mt5", "umt5"])
def models(request):
    built = []
    for seed in (0, 1):
        cfg, params = _model(request.param, seed)
        built.append((cfg, params, hf_model(cfg, params)))
    return built


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_generate_equals_transformers(models, kwargs):
    ended = 0
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, **kwargs)
        expected = _pad_after_eos(_reference(model, ids, mask, do_sample=False, **kwargs), cfg)
        assert ours.shape == expected.shape, (ours, expected)
        assert torch.equal(ours, expected), (ours, expected)
        ended += int((ours == cfg.eos_token_id).any(1).sum())
    assert ended > 0  # EOS handling was exercised


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(top_k=6), id="top-k"),
    pytest.param(dict(top_p=0.8, temperature=0.7), id="top-p-temperature"),
    pytest.param(dict(top_k=12, top_p=0.9, num_return_sequences=2), id="top-k-top-p-return2"),
    pytest.param(dict(num_beams=3, top_k=20, num_return_sequences=2), id="beam-sampling"),
])
def test_sampling_equals_transformers_with_same_seed(models, kwargs):
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, do_sample=True,
                              generator=torch.Generator().manual_seed(1234 + seed), **kwargs)
        torch.manual_seed(1234 + seed)
        expected = _pad_after_eos(_reference(model, ids, mask, do_sample=True, **kwargs), cfg)
        assert torch.equal(ours, expected), (ours, expected)


@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_deeper_decoder_equals_transformers_without_its_cache(model_type):
    """num_decoder_layers != num_layers: transformers' generate sizes its cache by the encoder
    depth and fails, so the reference runs with use_cache=False (same ids, slower)."""
    cfg, params = _model(model_type, 3, decoder_layers=3)
    model = hf_model(cfg, params)
    ids, mask = _inputs(cfg, 3)
    for kwargs in (dict(), dict(num_beams=3, length_penalty=0.8, num_return_sequences=2)):
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, **kwargs)
        expected = _pad_after_eos(_reference(model, ids, mask, do_sample=False, use_cache=False, **kwargs), cfg)
        assert torch.equal(ours, expected), (ours, expected)
