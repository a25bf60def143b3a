"""``mt5fn.generate`` against transformers' ``generate`` on the same weights: identical token ids.

Random tiny t5 / mt5 / umt5 models, float32, eager attention; a padded batch.
The EOS row of the head is scaled up so that sequences end at different
steps and the per-row stop, the padding after EOS and the beam-search
finished set are all exercised. Compared modulo transformers' fill: its beam
search writes EOS (not pad) after a finished hypothesis, because its pad id 0
reads as "no pad" there (see docs/design.md); mt5fn pads.

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


# ------------------------------------------------------------------ scores, encoder outputs, prefixes, stream
def _generated_mask(sequences: torch.Tensor, prefix: int, cfg: mt5fn.MT5Config) -> torch.Tensor:
    """(N, generated) True up to and including each row's first generated EOS."""
    generated = sequences[:, prefix:]
    is_eos = (generated == cfg.eos_token_id).long()
    return (is_eos.cumsum(1) - is_eos) == 0


def _reference_dict(model, ids, mask, **kwargs):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW,
                              return_dict_in_generate=True, output_scores=True, **kwargs)


SCORE_SETTINGS = [
    pytest.param(dict(), id="greedy"),
    pytest.param(dict(repetition_penalty=1.6, no_repeat_ngram_size=2, min_new_tokens=3), id="greedy-processors"),
    pytest.param(dict(do_sample=True, top_k=6), id="sample-top-k"),
    pytest.param(dict(do_sample=True, top_p=0.8, temperature=0.7, num_return_sequences=2), id="sample-top-p-return2"),
]


@pytest.mark.parametrize("kwargs", SCORE_SETTINGS)
def test_scores_equal_transition_scores(models, kwargs):
    """greedy / sampling: scores == compute_transition_scores(..., normalize_logits=True) up to each row's EOS."""
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        sampling = kwargs.get("do_sample", False)
        extra = dict(generator=torch.Generator().manual_seed(99 + seed)) if sampling else {}
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, output_scores=True, **extra, **kwargs)
        torch.manual_seed(99 + seed)
        ref = _reference_dict(model, ids, mask, **({"do_sample": False} | kwargs))
        expected = model.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=True)
        assert torch.equal(ours.sequences, _pad_after_eos(ref.sequences, cfg))
        kept = _generated_mask(ours.sequences, 1, cfg)
        assert ours.scores.shape == expected.shape == kept.shape
        torch.testing.assert_close(ours.scores[kept], expected[kept], rtol=1e-5, atol=1e-5)
        assert (ours.scores[~kept] == 0).all() and (ours.scores[kept] <= 0).all()
        torch.testing.assert_close(ours.sequences_scores, ours.scores.sum(1))


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(num_beams=3, num_return_sequences=3, length_penalty=0.6), id="beam-lp0.6-return3"),
    pytest.param(dict(num_beams=4, length_penalty=2.0, early_stopping=True, num_return_sequences=2), id="early"),
    pytest.param(dict(num_beams=2, repetition_penalty=1.4, no_repeat_ngram_size=2, min_new_tokens=3), id="procs"),
    pytest.param(dict(num_beams=3, do_sample=True, top_k=20, num_return_sequences=2), id="beam-sampling"),
])
def test_beam_scores_equal_transformers(models, kwargs):
    """beam search: sequences_scores == transformers' sequences_scores; scores == its transition scores
    (compute_transition_scores with beam_indices), which sum to the beam score before the length penalty."""
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        extra = dict(generator=torch.Generator().manual_seed(7 + seed)) if kwargs.get("do_sample") else {}
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, output_scores=True, **extra, **kwargs)
        torch.manual_seed(7 + seed)
        ref = _reference_dict(model, ids, mask, **({"do_sample": False} | kwargs))
        assert torch.equal(ours.sequences, _pad_after_eos(ref.sequences, cfg))
        torch.testing.assert_close(ours.sequences_scores, ref.sequences_scores, rtol=1e-5, atol=1e-5)
        expected = model.compute_transition_scores(ref.sequences, ref.scores, ref.beam_indices, normalize_logits=False)
        assert ours.scores.shape == expected.shape
        torch.testing.assert_close(ours.scores, expected, rtol=1e-5, atol=1e-5)
        lengths = (ref.beam_indices >= 0).sum(1)
        penalty = kwargs.get("length_penalty", 1.0)
        torch.testing.assert_close(ours.scores.sum(1) / lengths ** penalty, ours.sequences_scores,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(), id="greedy"),
    pytest.param(dict(num_beams=3, num_return_sequences=2, length_penalty=0.8), id="beam"),
    pytest.param(dict(do_sample=True, top_k=8), id="sample"),
])
def test_encoder_outputs_are_reused(models, kwargs):
    from transformers.modeling_outputs import BaseModelOutput

    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        hidden = mt5fn.encode(params, cfg, ids, mask)

        def ours(**given):
            extra = dict(generator=torch.Generator().manual_seed(5)) if kwargs.get("do_sample") else {}
            return mt5fn.generate(params, cfg, attention_mask=mask, max_new_tokens=MAX_NEW, **given, **extra, **kwargs)

        reused = ours(input_ids=None, encoder_outputs=hidden)
        assert torch.equal(reused, ours(input_ids=ids))
        assert torch.equal(reused, ours(input_ids=ids, encoder_outputs=hidden))
        torch.manual_seed(5)
        with torch.no_grad():
            theirs = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.clone()),
                                    attention_mask=mask, max_new_tokens=MAX_NEW, **({"do_sample": False} | kwargs))
        assert torch.equal(reused, _pad_after_eos(theirs, cfg))


@pytest.mark.parametrize("start", [False, True], ids=["prefix", "prefix-with-start"])
@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(), id="greedy"),
    pytest.param(dict(min_new_tokens=3, repetition_penalty=1.5, no_repeat_ngram_size=2), id="greedy-processors"),
    pytest.param(dict(num_beams=3, num_return_sequences=2, length_penalty=1.3), id="beam"),
    pytest.param(dict(do_sample=True, top_p=0.9, num_return_sequences=2), id="sample"),
])
def test_decoder_prefix_as_transformers(models, kwargs, start):
    """A forced decoder prefix: transformers puts the start token in front when no row has it, counts
    max_new_tokens / min_new_tokens after the prefix, and returns the prefix with the new tokens."""
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        prefix = torch.randint(2, cfg.vocab_size, (ids.shape[0], 3), generator=torch.Generator().manual_seed(seed))
        if start:
            prefix[:, 0] = cfg.decoder_start_token_id
        width = prefix.shape[1] + (0 if start else 1)
        extra = dict(generator=torch.Generator().manual_seed(11)) if kwargs.get("do_sample") else {}
        ours = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, decoder_input_ids=prefix,
                              output_scores=True, **extra, **kwargs)
        torch.manual_seed(11)
        ref = _reference_dict(model, ids, mask, decoder_input_ids=prefix, **({"do_sample": False} | kwargs))
        rows = ids.shape[0] * kwargs.get("num_return_sequences", 1)
        assert ours.sequences.shape[1] <= width + MAX_NEW
        assert torch.equal(ours.sequences[:, width - prefix.shape[1]:width],
                           prefix.repeat_interleave(rows // ids.shape[0], 0))
        generated = ref.sequences[:, width:]
        expected = ref.sequences.clone()
        expected[:, width:] = _pad_after_eos(torch.cat([ref.sequences[:, :1], generated], 1), cfg)[:, 1:]
        assert torch.equal(ours.sequences, expected), (ours.sequences, ref.sequences)
        if kwargs.get("num_beams", 1) > 1:
            torch.testing.assert_close(ours.sequences_scores, ref.sequences_scores, rtol=1e-5, atol=1e-5)
        else:
            transition = model.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=True)
            kept = _generated_mask(ours.sequences, width, cfg)
            torch.testing.assert_close(ours.scores[kept], transition[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(), id="greedy"),
    pytest.param(dict(min_new_tokens=2, no_repeat_ngram_size=2), id="greedy-processors"),
    pytest.param(dict(do_sample=True, top_k=10, temperature=0.8, num_return_sequences=2), id="sample"),
])
def test_stream_yields_generate_columns(models, kwargs):
    """stream's steps stacked are generate's generated columns, which equal transformers' (modulo its fill)."""
    for seed, (cfg, params, model) in enumerate(models):
        ids, mask = _inputs(cfg, seed)
        gen = (lambda: dict(generator=torch.Generator().manual_seed(3))) if kwargs.get("do_sample") else dict
        steps = list(mt5fn.stream(params, cfg, ids, mask, max_new_tokens=MAX_NEW, **gen(), **kwargs))
        full = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW, **gen(), **kwargs)
        assert all(step.shape == (full.shape[0],) and step.dtype == torch.long for step in steps)
        assert torch.equal(torch.stack(steps, 1), full[:, 1:])
        torch.manual_seed(3)
        assert torch.equal(full, _pad_after_eos(_reference(model, ids, mask, **({"do_sample": False} | kwargs)), cfg))
        prefix = ids[:, :2] + 0
        streamed = list(mt5fn.stream(params, cfg, ids, mask, max_new_tokens=4, decoder_input_ids=prefix, **gen(),
                                     **kwargs))
        with_prefix = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=4, decoder_input_ids=prefix, **gen(),
                                     **kwargs)
        assert torch.equal(torch.stack(streamed, 1), with_prefix[:, 3:])


@pytest.mark.parametrize("hf_settings", [
    pytest.param(dict(max_length=8, min_length=6), id="max-min-length"),
    pytest.param(dict(max_length=9, do_sample=True, top_k=0, top_p=0.9), id="top-k-0-is-off"),
    pytest.param(dict(max_new_tokens=6, do_sample=True, top_k=0, temperature=0.8), id="top-k-0-temperature"),
])
def test_generation_config_json_decodes_as_transformers_reads_it(models, hf_settings, tmp_path):
    """A generation_config.json in transformers' own conventions (lengths that count the decoder start
    token, ``top_k: 0`` for "no top-k") gives the same ids through ``GenerationConfig.from_hf``."""
    from transformers import GenerationConfig as HFGenerationConfig

    for seed, (cfg, params, model) in enumerate(models):
        hf = HFGenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, **hf_settings)
        hf.save_pretrained(tmp_path)
        config = mt5fn.GenerationConfig.from_hf(tmp_path / "generation_config.json")
        ids, mask = _inputs(cfg, seed)
        ours = mt5fn.generate(params, cfg, ids, mask, config, generator=torch.Generator().manual_seed(99 + seed))
        torch.manual_seed(99 + seed)
        with torch.no_grad():
            expected = _pad_after_eos(model.generate(input_ids=ids, attention_mask=mask, generation_config=hf), cfg)
        assert torch.equal(ours, expected), (hf_settings, ours, expected)
