"""Decoding: the K/V cache and ``generate``.

* Cached decoding is teacher forcing: feeding the decoder ids one step at a
  time through ``decode_step`` (out of place, in place, or in chunks) gives at
  every position the logits ``forward`` gives for the whole sequence, for any
  model, batch, encoder padding and length. The relative position bias of a
  cached query is taken at its absolute position.
* ``decode_step`` is a pure function of its inputs: it leaves the input cache
  unchanged, ``vmap`` over a stack of caches equals a loop, and
  ``torch.func.grad`` through it equals autograd through ``forward``.
* Beam search with one beam is greedy decoding when hypotheses cannot be
  overtaken after finishing (``early_stopping=True``, or ``length_penalty=0``
  where scores only fall) -- the one beam then always follows the arg-max.
* Sampling restricted to the top-1 token is greedy decoding, whatever the
  temperature or nucleus.
* Sampling is a function of the generator's seed: the same seed, the same tokens.
* Output layout (transformers'): column 0 is ``decoder_start_token_id``;
  after a row's EOS only ``pad_token_id`` follows; at most ``max_new_tokens``
  tokens per row; and no column more than the longest row needs.
* Beam search finds at least as good a sequence as greedy decoding under its
  own objective, ``sum log p / length ** length_penalty`` scored by teacher
  forcing. (Beam search is not exact search: the greedy prefix competes inside
  the beam and is only dropped for K better prefixes, which could in principle
  all end worse. The property is what the search is for, and it held on every
  drawn model, 150 of them under the ``thorough`` profile.)
* Scores are teacher-forced log-probabilities: without score processing,
  ``generate(..., output_scores=True).scores`` holds, for each generated
  token, ``log_softmax(forward(...))`` of that token given the ids before it
  (0 after EOS); beam search's ``sequences_scores`` is their sum over
  ``generated_length ** length_penalty``, greedy's and sampling's their sum.
* ``stream`` is ``generate`` one step at a time: its yields stacked are
  ``generate``'s generated columns, for greedy decoding and sampling alike.
* Greedy decoding continues its own prefix: forcing its first k tokens as
  ``decoder_input_ids`` and generating the rest reproduces its output; and
  ``encoder_outputs=encode(...)`` decodes exactly as ``input_ids`` do.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap
from torch.utils import _pytree as pytree

import mt5fn
from mt5fn.decoding import decode_tokens, relayout_linear
from mt5fn.functional import linear, linear_form
from spec.strategies import configs, model_cases, padding_masks, token_ids

TOL64 = dict(rtol=1e-9, atol=1e-9)
_HALF = max(1, settings.default.max_examples // 2)


def _boost_eos(params: dict, cfg: mt5fn.MT5Config, factor: float) -> dict:
    """Scale the head row of EOS so a random tiny model ends sequences (exercises EOS handling)."""
    head = params.get("lm_head", params["shared"])
    head[cfg.eos_token_id] *= factor
    return params


@dataclasses.dataclass(frozen=True)
class GenCase:
    cfg: mt5fn.MT5Config
    params: dict
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    max_new_tokens: int


@st.composite
def generation_cases(draw) -> GenCase:
    """A tiny float32 model (EOS made likelier half the time) and a padded batch to continue."""
    cfg = draw(configs())
    params = mt5fn.init_params(cfg, seed=draw(st.integers(0, 2 ** 16)))
    params = _boost_eos(params, cfg, draw(st.sampled_from([1.0, 3.0])))
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    ids = draw(token_ids(cfg.vocab_size, batch, length))
    mask = draw(padding_masks(batch, length)) if draw(st.booleans()) else None
    return GenCase(cfg, params, ids, mask, draw(st.integers(1, 8)))


def _generated(row: torch.Tensor, cfg: mt5fn.MT5Config) -> list[int]:
    """The generated tokens of one output row, up to and including EOS."""
    tokens = row[1:].tolist()
    return tokens[:tokens.index(cfg.eos_token_id) + 1] if cfg.eos_token_id in tokens else tokens


def _score(case: GenCase, sequences: torch.Tensor, rows: torch.Tensor, length_penalty: float) -> torch.Tensor:
    """Teacher-forced ``sum log p / length ** length_penalty`` of each output row (generated part)."""
    scores = []
    for index, row in enumerate(sequences):
        tokens = torch.tensor(_generated(row, case.cfg))
        source = case.input_ids[rows[index]][None]
        mask = None if case.attention_mask is None else case.attention_mask[rows[index]][None]
        decoder_in = torch.cat([row[:1], tokens[:-1]])[None]
        log_probs = torch.log_softmax(mt5fn.forward(case.params, case.cfg, source, decoder_in, mask)[0], -1)
        total = log_probs.gather(1, tokens[:, None]).sum()
        scores.append(total / len(tokens) ** length_penalty)
    return torch.stack(scores)


# ------------------------------------------------------------------ the cache
@given(model_cases(), st.data())
def test_cached_steps_equal_teacher_forcing(case, data):
    cfg, p = case.cfg, case.params
    ids, mask, dec = case.input_ids, case.attention_mask, case.decoder_input_ids
    expected = mt5fn.forward(p, cfg, ids, dec, mask)  # (B, T, V)
    length = dec.shape[1]
    encoder_hidden = mt5fn.encode(p, cfg, ids, mask)
    spare = data.draw(st.integers(0, 3), label="unused cache slots")

    for inplace in (False, True):
        cache = mt5fn.init_cache(p, cfg, encoder_hidden, mask, length + spare)
        steps = []
        for t in range(length):
            logits, cache = mt5fn.decode_step(p, cfg, cache, dec[:, t:t + 1], inplace=inplace)
            steps.append(logits)
        torch.testing.assert_close(torch.cat(steps, 1), expected, **TOL64)
        assert int(cache.position) == length

    cut = data.draw(st.integers(0, length), label="chunk boundary")
    cache = mt5fn.init_cache(p, cfg, encoder_hidden, mask, length + spare)
    chunks = []
    for piece in (dec[:, :cut], dec[:, cut:]):
        if piece.shape[1]:
            logits, cache = mt5fn.decode_step(p, cfg, cache, piece)
            chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, 1), expected, **TOL64)


@given(model_cases(dtype=torch.float32, max_batch=3), st.sampled_from([None, 1, 3]))
def test_prepared_weights_equal_teacher_forcing(case, rows):
    """The decoding layout of ``prepare_decoding`` (forced on, even for tiny weights) runs the same
    block as teacher forcing: decode_step on it, in place and out of place, equals ``forward``, and
    so does ``forward`` itself on the prepared tree."""
    cfg, p = case.cfg, case.params
    count = 1 if rows is None else rows
    ids = case.input_ids[:1].expand(count, -1)
    mask = None if case.attention_mask is None else case.attention_mask[:1].expand(count, -1)
    dec = case.decoder_input_ids[:1].expand(count, -1)
    expected = mt5fn.forward(p, cfg, ids, dec, mask)
    fast = mt5fn.prepare_decoding(p, cfg, rows=rows, min_numel=0)
    scale = expected.abs().max().item() + 1.0
    tol = dict(rtol=1e-5, atol=1e-5 * scale)
    with torch.inference_mode():
        for inplace in (True, False):
            cache = mt5fn.init_cache(fast, cfg, mt5fn.encode(fast, cfg, ids, mask), mask, dec.shape[1])
            steps = []
            for t in range(dec.shape[1]):
                logits, cache = mt5fn.decode_step(fast, cfg, cache, dec[:, t:t + 1], inplace=inplace)
                steps.append(logits)
            torch.testing.assert_close(torch.cat(steps, 1), expected, **tol)
        torch.testing.assert_close(mt5fn.forward(fast, cfg, ids, dec, mask), expected, **tol)


@settings(max_examples=_HALF)
@given(model_cases(max_length=6))
def test_decode_step_is_pure_vmap_and_grad(case):
    cfg, p = case.cfg, case.params
    ids, mask, dec = case.input_ids, case.attention_mask, case.decoder_input_ids
    encoder_hidden = mt5fn.encode(p, cfg, ids, mask)
    cache = mt5fn.init_cache(p, cfg, encoder_hidden, mask, dec.shape[1])
    if dec.shape[1] > 1:
        _, cache = mt5fn.decode_step(p, cfg, cache, dec[:, :1])
    before = pytree.tree_map(torch.clone, cache)
    logits, _ = mt5fn.decode_step(p, cfg, cache, dec[:, -1:])
    for old, new in zip(pytree.tree_leaves(before), pytree.tree_leaves(cache)):
        assert torch.equal(old, new)  # out of place: the input cache is untouched

    # vmap over a stack of two caches (rows of the batch as separate problems) equals a loop.
    batch = dec.shape[0]
    stacked = pytree.tree_map(lambda leaf: torch.stack([leaf, leaf]), cache)
    tokens = torch.stack([dec[:, -1:], dec[:, :1]])  # (2, B, 1)
    mapped, _ = vmap(lambda c, t: mt5fn.decode_step(p, cfg, c, t), in_dims=(0, 0))(stacked, tokens)
    for k in range(2):
        looped, _ = mt5fn.decode_step(p, cfg, cache, tokens[k])
        torch.testing.assert_close(mapped[k], looped, **TOL64)
    assert mapped.shape == (2, batch, 1, cfg.vocab_size)

    # grad through the cached step equals autograd through teacher forcing.
    def step_sum(params):
        hidden = mt5fn.encode(params, cfg, ids, mask)
        fresh = mt5fn.init_cache(params, cfg, hidden, mask, dec.shape[1])
        total = 0.0
        for t in range(dec.shape[1]):
            out, fresh = mt5fn.decode_step(params, cfg, fresh, dec[:, t:t + 1])
            total = total + out.sum()
        return total

    leaves = pytree.tree_map(lambda leaf: leaf.detach().requires_grad_(True), p)
    mt5fn.forward(leaves, cfg, ids, dec, mask).sum().backward()
    got = grad(step_sum)(p)
    for path, value in mt5fn.flatten_params(got).items():
        torch.testing.assert_close(value, mt5fn.flatten_params(leaves)[path].grad, **TOL64, msg=path)


# ------------------------------------------------------------------ generate
@given(generation_cases(), st.sampled_from([True, "length0"]))
def test_one_beam_is_greedy(case, mode):
    early, penalty = (True, 1.5) if mode is True else (False, 0.0)
    greedy = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                            max_new_tokens=case.max_new_tokens)
    gc = mt5fn.GenerationConfig(max_new_tokens=case.max_new_tokens, length_penalty=penalty, early_stopping=early)
    beam = decode_tokens(case.params, case.cfg, case.input_ids, case.attention_mask, gc, beam_search=True)
    assert torch.equal(beam, greedy)


@given(generation_cases(), st.floats(0.3, 3.0), st.sampled_from([None, 0.5, 1.0]), st.integers(0, 2 ** 16))
def test_top_1_sampling_is_greedy(case, temperature, top_p, seed):
    greedy = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                            max_new_tokens=case.max_new_tokens)
    sampled = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                             max_new_tokens=case.max_new_tokens, do_sample=True, top_k=1, temperature=temperature,
                             top_p=top_p, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(sampled, greedy)


@given(generation_cases(), st.integers(0, 2 ** 16), st.sampled_from([1, 2]), st.sampled_from([1, 3]))
def test_same_seed_same_samples(case, seed, num_beams, num_return_sequences):
    num_return_sequences = min(num_return_sequences, num_beams) if num_beams > 1 else num_return_sequences

    def draw():
        return mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                              max_new_tokens=case.max_new_tokens, do_sample=True, num_beams=num_beams,
                              num_return_sequences=num_return_sequences,
                              generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(), draw())


@given(generation_cases(), st.sampled_from(["greedy", "sample", "beam"]), st.integers(0, 3))
def test_output_layout(case, method, min_new_tokens):
    cfg = case.cfg
    kwargs = {"greedy": {}, "sample": dict(do_sample=True, generator=torch.Generator().manual_seed(0)),
              "beam": dict(num_beams=3, num_return_sequences=2)}[method]
    out = mt5fn.generate(case.params, cfg, case.input_ids, case.attention_mask, max_new_tokens=case.max_new_tokens,
                         min_new_tokens=min_new_tokens, **kwargs)
    rows = case.input_ids.shape[0] * kwargs.get("num_return_sequences", 1)
    assert out.shape[0] == rows and out.dtype == torch.long
    assert (out[:, 0] == cfg.decoder_start_token_id).all()
    assert out.shape[1] - 1 <= case.max_new_tokens
    lengths = []
    for row in out:
        generated = _generated(row, cfg)
        lengths.append(len(generated))
        assert (row[1 + len(generated):] == cfg.pad_token_id).all()  # nothing but pad after EOS
        if generated and generated[-1] == cfg.eos_token_id:
            assert len(generated) > min(min_new_tokens, case.max_new_tokens - 1)  # no EOS before the minimum
    assert out.shape[1] == 1 + max(lengths)  # as few columns as the longest row needs


@settings(max_examples=_HALF)
@given(generation_cases(), st.sampled_from([2, 3]), st.sampled_from([0.0, 1.0]),
       st.sampled_from([False, "never"]))
def test_beam_beats_greedy(case, num_beams, length_penalty, early_stopping):
    greedy = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                            max_new_tokens=case.max_new_tokens)
    beam = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                          max_new_tokens=case.max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                          early_stopping=early_stopping)
    rows = torch.arange(case.input_ids.shape[0])
    best, baseline = _score(case, beam, rows, length_penalty), _score(case, greedy, rows, length_penalty)
    assert (best >= baseline - 1e-4).all(), (best, baseline)


@given(st.integers(1, 40), st.integers(1, 24), st.sampled_from([None, 1, 2, 5]), st.integers(1, 9),
       st.sampled_from([torch.float32, torch.float64]))
def test_relayout_linear_equals_linear(out_features, in_features, rows, block, dtype):
    """Every weight-leaf form ``relayout_linear`` picks (column blocks for one row, oneDNN-packed for
    several, the plain tensor otherwise) computes ``x @ W.T`` through ``functional.linear``."""
    weight = torch.randn(out_features, in_features, dtype=dtype)
    count = 1 if rows is None else rows
    x = torch.randn(count, 1, in_features, dtype=dtype)  # (rows, T=1, in), as a decoding step
    form = relayout_linear(weight, rows, min_numel=0, block=block)
    expected = torch.nn.functional.linear(x, weight)
    torch.testing.assert_close(linear(x, form), expected, rtol=1e-5, atol=1e-5)
    if rows == 1:
        assert linear_form(form) == "columns" and len(form["columns"]) == -(-out_features // block)
    elif dtype == torch.float32 and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        assert linear_form(form) == "onednn"


# ------------------------------------------------------------------ scores, stream, prefixes
def _teacher_forced(case: GenCase, sequences: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(N, generated) log p of each generated token given the ids before it, 0 after the row's EOS."""
    mask = None if case.attention_mask is None else case.attention_mask[rows]
    logits = mt5fn.forward(case.params, case.cfg, case.input_ids[rows], sequences[:, :-1], mask)
    picked = torch.log_softmax(logits, -1).gather(-1, sequences[:, 1:, None])[..., 0]  # (N, generated)
    lengths = torch.tensor([len(_generated(row, case.cfg)) for row in sequences])
    kept = torch.arange(picked.shape[1])[None, :] < lengths[:, None]
    return torch.where(kept, picked, 0.0), lengths


@given(generation_cases(), st.sampled_from(["greedy", "beam"]), st.sampled_from([0.0, 0.7, 1.5]))
def test_scores_are_teacher_forced_log_probabilities(case, method, length_penalty):
    kwargs = dict(num_beams=3, num_return_sequences=2, length_penalty=length_penalty) if method == "beam" else {}
    out = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask,
                         max_new_tokens=case.max_new_tokens, output_scores=True, **kwargs)
    rows = torch.arange(case.input_ids.shape[0]).repeat_interleave(kwargs.get("num_return_sequences", 1))
    expected, lengths = _teacher_forced(case, out.sequences, rows)
    torch.testing.assert_close(out.scores, expected, rtol=1e-5, atol=1e-5)
    total = out.scores.sum(1)
    if method == "beam":
        total = total / lengths.float() ** length_penalty
    torch.testing.assert_close(out.sequences_scores, total, rtol=1e-5, atol=1e-5)


@given(generation_cases(), st.integers(0, 2 ** 16), st.booleans(), st.sampled_from([1, 2]))
def test_stream_is_generate_one_step_at_a_time(case, seed, sample, num_return_sequences):
    kwargs = dict(do_sample=True, num_return_sequences=num_return_sequences) if sample else {}

    def run(fn):
        generator = torch.Generator().manual_seed(seed)
        return fn(case.params, case.cfg, case.input_ids, case.attention_mask, max_new_tokens=case.max_new_tokens,
                  generator=generator, **kwargs)

    steps = list(run(mt5fn.stream))
    assert torch.equal(torch.stack(steps, 1), run(mt5fn.generate)[:, 1:])


@given(generation_cases(), st.integers(1, 4))
def test_greedy_continues_its_own_prefix(case, k):
    hidden = mt5fn.encode(case.params, case.cfg, case.input_ids, case.attention_mask)
    out = mt5fn.generate(case.params, case.cfg, case.input_ids, case.attention_mask, max_new_tokens=case.max_new_tokens)
    reused = mt5fn.generate(case.params, case.cfg, None, case.attention_mask, max_new_tokens=case.max_new_tokens,
                            encoder_outputs=hidden)
    assert torch.equal(reused, out)
    for b in range(out.shape[0]):
        row = out[b:b + 1, :1 + len(_generated(out[b], case.cfg))]  # this row alone, without trailing pad
        if row.shape[1] - 1 <= k or k >= case.max_new_tokens:
            continue
        mask = None if case.attention_mask is None else case.attention_mask[b:b + 1]
        continued = mt5fn.generate(case.params, case.cfg, case.input_ids[b:b + 1], mask,
                                   max_new_tokens=case.max_new_tokens - k, decoder_input_ids=row[:, :1 + k])
        assert torch.equal(continued, row)
