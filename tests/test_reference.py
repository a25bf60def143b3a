"""``mt5fn/reference.py`` -- the spec's oracle -- against transformers and against mt5fn itself.

Tiny random models in float32 with eager attention across the family: T5 (relu, tied head, scaled
output), T5 v1.1-like (gated, untied), mT5 (gated-gelu, untied), UMT5 (a position table per block),
and odd shapes (``num_heads * d_kv != d_model``, encoder and decoder of different depths,
gated-silu, plain erf gelu, a tied UMT5). Padded encoder batches longer than ``max_distance``.

* logits, encoder output and hidden states equal transformers' to 1e-4 (as tests/test_differential.py);
* the loss with -100 labels and a padded mask equals transformers';
* ``greedy`` equals transformers' ``generate(do_sample=False, num_beams=1)`` token for token,
  layout included, and runs through the cached step;
* the cached step, fed in chunks, equals teacher forcing and ``mt5fn.decode_step``;
* ``forward`` and ``hidden_states`` equal ``mt5fn.forward`` / ``mt5fn.intermediates`` to float32 round-off;
* the file stays within 500 lines and imports only torch, einops and the standard library.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest
import torch

import mt5fn
from mt5fn import reference as ref
from reference import hf_model

ATOL = 1e-4  # against transformers, as tests/test_differential.py
MAX_NEW = 8

# eos_boost scales the EOS row of the head, per case, so that rows end at different steps (EOS, then
# padding) and some batches stop before max_new_tokens: random tiny models rarely end otherwise.
CASES = {
    "t5": dict(model_type="t5", feed_forward_proj="relu", tie_word_embeddings=True, num_heads=4, d_kv=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=10, eos_boost=5.0),
    "t5-v1_1": dict(model_type="t5", feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_heads=4,
                    d_kv=6, eos_boost=3.0),
    "mt5": dict(model_type="mt5", feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_heads=4, d_kv=4,
                eos_boost=1.6),
    "umt5": dict(model_type="umt5", feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_heads=4, d_kv=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=10, eos_boost=4.0),
    "odd-mt5": dict(model_type="mt5", feed_forward_proj="gated-silu", tie_word_embeddings=False, num_heads=3,
                    d_kv=5, num_layers=3, num_decoder_layers=2, layer_norm_epsilon=1e-3,
                    relative_attention_num_buckets=8, relative_attention_max_distance=6, eos_boost=4.0),
    "odd-umt5": dict(model_type="umt5", feed_forward_proj="gelu", tie_word_embeddings=True, num_heads=2, d_kv=7,
                     num_layers=1, num_decoder_layers=3, relative_attention_num_buckets=4,
                     relative_attention_max_distance=5, eos_boost=4.0),
}


def _model(name: str, seed: int = 0):
    values = dict(vocab_size=48, d_model=16, d_ff=24, num_layers=2, dropout_rate=0.0) | CASES[name]
    boost = values.pop("eos_boost")
    cfg = mt5fn.MT5Config(**values)
    params = mt5fn.init_params(cfg, seed=seed)
    params.get("lm_head", params["shared"])[cfg.eos_token_id] *= boost
    return cfg, params


def _batch(cfg: mt5fn.MT5Config, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, cfg.vocab_size, (3, 13), generator=generator)  # longer than max_distance
    dec = torch.randint(0, cfg.vocab_size, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding
    mask[2, 2:5] = 0  # inner padding
    dec_mask = torch.ones_like(dec)
    dec_mask[2, 6:] = 0
    return ids, dec, mask, dec_mask


def _round_off(ours, theirs, what=""):
    """float32 round-off, as tests/test_intermediates.py: 1e-5 of the magnitude."""
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * scale, msg=what)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    cfg, params = _model(request.param)
    return request.param, cfg, params, hf_model(cfg, params)


# ------------------------------------------------------------------------------ against transformers
def test_logits_encoder_and_hidden_states_equal_transformers(case):
    _, cfg, params, model = case
    ids, dec, mask, dec_mask = _batch(cfg)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                         decoder_attention_mask=dec_mask, output_hidden_states=True)
    logits = ref.forward(params, cfg, ids, dec, mask, dec_mask)
    assert logits.shape == (3, 9, cfg.vocab_size)
    torch.testing.assert_close(logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(ref.encode(params, cfg, ids, mask), expected.encoder_last_hidden_state,
                               atol=ATOL, rtol=0)
    states = ref.hidden_states(params, cfg, ids, dec, mask, dec_mask)
    assert len(states["encoder"]) == cfg.num_layers + 1 == len(expected.encoder_hidden_states)
    assert len(states["decoder"]) == cfg.num_decoder_layers + 1 == len(expected.decoder_hidden_states)
    for ours, theirs in zip(states["encoder"] + states["decoder"],
                            expected.encoder_hidden_states + expected.decoder_hidden_states):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_loss_equals_transformers(case):
    _, cfg, params, model = case
    ids, labels, mask, _ = _batch(cfg, seed=1)
    labels = labels.clone()
    labels[0, 5:] = -100
    labels[2, 1:3] = -100
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ours = ref.loss(params, cfg, ids, labels, mask)
    assert ours.shape == () and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


def test_greedy_equals_transformers_generate(case):
    name, cfg, params, model = case
    ended = 0
    for seed in (0, 1, 2):
        ids, _, mask, _ = _batch(cfg, seed)
        ours = ref.greedy(params, cfg, ids, mask, max_new_tokens=MAX_NEW)
        # transformers sizes its cache by the encoder depth: unequal depths run without it.
        uncached = dict(use_cache=False) if cfg.num_layers != cfg.num_decoder_layers else {}
        with torch.no_grad():
            expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                      num_beams=1, **uncached)
        assert ours.shape == expected.shape and torch.equal(ours, expected), (name, seed, ours, expected)
        assert (ours[:, 0] == cfg.decoder_start_token_id).all()
        ended += int((ours == cfg.eos_token_id).any(1).sum())
    assert ended > 0, name  # EOS and the padding after it were exercised


def test_greedy_stops_when_every_row_has_ended():
    cfg, params = _model("mt5")
    params["lm_head"][cfg.eos_token_id] *= 20  # every row ends at once
    ids, _, mask, _ = _batch(cfg)
    tokens = ref.greedy(params, cfg, ids, mask, max_new_tokens=MAX_NEW)
    assert tokens.tolist() == [[cfg.decoder_start_token_id, cfg.eos_token_id]] * 3


def test_activations_are_the_ones_the_config_accepts_and_equal_transformers():
    from transformers.activations import ACT2FN

    assert set(ref.ACTIVATIONS) == set(mt5fn.functional.ACTIVATION_FUNCTIONS)
    x = torch.linspace(-12, 12, 4001)
    for name, act in ref.ACTIVATIONS.items():
        torch.testing.assert_close(act(x), ACT2FN[name](x), atol=1e-6, rtol=1e-6, msg=name)


def test_bucket_function_equals_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    distances = torch.arange(-3000, 3001)
    for bidirectional in (True, False):
        for buckets, max_distance in ((32, 128), (8, 5), (4, 3), (64, 1000), (16, 20)):
            ours = ref.relative_position_bucket(distances, bidirectional, buckets, max_distance)
            theirs = T5Attention._relative_position_bucket(distances, bidirectional, buckets, max_distance)
            assert torch.equal(ours, theirs), (bidirectional, buckets, max_distance)


# -------------------------------------------------------------------------------- against mt5fn
def test_forward_and_hidden_states_equal_mt5fn(case):
    name, cfg, params, _ = case
    ids, dec, mask, dec_mask = _batch(cfg)
    _round_off(ref.forward(params, cfg, ids, dec, mask, dec_mask),
               mt5fn.forward(params, cfg, ids, dec, mask, dec_mask), name)
    _round_off(ref.encode(params, cfg, ids, mask), mt5fn.encode(params, cfg, ids, mask), name)
    _round_off(ref.loss(params, cfg, ids, dec, mask), mt5fn.loss(params, cfg, ids, dec, mask), name)
    ours = ref.hidden_states(params, cfg, ids, dec, mask, dec_mask)
    theirs = mt5fn.intermediates(params, cfg, ids, dec, mask, dec_mask)
    for key in ("encoder", "decoder"):
        assert len(ours[key]) == len(theirs[f"{key}_hidden_states"])
        for layer, (a, b) in enumerate(zip(ours[key], theirs[f"{key}_hidden_states"])):
            _round_off(a, b, f"{name} {key} {layer}")


def test_cached_steps_equal_teacher_forcing_and_mt5fn_decode_step(case):
    """Fed in chunks of 3, 1, 1, 4 tokens, the step gives teacher forcing's logits (causal, so the
    decoder mask is not needed) and mt5fn.decode_step's, and leaves its input cache untouched."""
    name, cfg, params, _ = case
    ids, dec, mask, _ = _batch(cfg)
    full = ref.forward(params, cfg, ids, dec, mask)  # (B, T, V)
    encoded = ref.encode(params, cfg, ids, mask)
    cache = ref.init_cache(params, cfg, encoded, mask, dec.shape[1] + 2)  # spare slots are never read
    theirs_cache = mt5fn.init_cache(params, cfg, mt5fn.encode(params, cfg, ids, mask), mask, dec.shape[1] + 2)
    start = 0
    for steps in (3, 1, 1, 4):
        chunk = dec[:, start:start + steps]
        before = [key.clone() for key in cache.self_key]
        logits, next_cache = ref.decode_step(params, cfg, cache, chunk)
        assert all(torch.equal(a, b) for a, b in zip(before, cache.self_key)) and cache.position == start
        theirs, theirs_cache = mt5fn.decode_step(params, cfg, theirs_cache, chunk)
        _round_off(logits, full[:, start:start + steps], f"{name} step at {start}")
        _round_off(logits, theirs, f"{name} step at {start}")
        cache, start = next_cache, start + steps
    assert cache.position == dec.shape[1]


def test_greedy_runs_through_the_cached_step(monkeypatch):
    cfg, params = _model("umt5")
    ids, _, mask, _ = _batch(cfg)
    expected = ref.greedy(params, cfg, ids, mask, max_new_tokens=MAX_NEW)
    calls = []
    step = ref.decode_step

    def counted(params, cfg, cache, token_ids):
        calls.append(token_ids.shape[1])
        return step(params, cfg, cache, token_ids)

    def refused(*args, **kwargs):
        raise AssertionError("greedy must not re-run teacher forcing")

    monkeypatch.setattr(ref, "decode_step", counted)
    monkeypatch.setattr(ref, "forward", refused)
    monkeypatch.setattr(ref, "hidden_states", refused)
    assert torch.equal(ref.greedy(params, cfg, ids, mask, max_new_tokens=MAX_NEW), expected)
    assert calls == [1] * (expected.shape[1] - 1)  # one token per step, one step per generated column
    assert torch.equal(expected, mt5fn.generate(params, cfg, ids, mask, max_new_tokens=MAX_NEW))


# --------------------------------------------------------------------------------- the file itself
def test_file_is_short_and_imports_only_torch_einops_and_the_standard_library():
    path = pathlib.Path(ref.__file__)
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 500
    tree = ast.parse(text)
    assert ast.get_docstring(tree)
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    allowed = {"torch", "einops"} | set(sys.stdlib_module_names)
    imported = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in type_only:
            continue
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file must work when copied elsewhere"
            imported.append(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert roots <= allowed, roots - allowed
    assert {"torch", "einops"} <= roots


def test_public_names():
    for name in ("encode", "forward", "loss", "greedy", "hidden_states", "init_cache", "decode_step"):
        assert callable(getattr(ref, name)), name
