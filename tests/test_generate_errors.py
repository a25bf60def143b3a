"""Bad input to ``generate``, ``init_cache`` and ``decode_step``: a clear ``ValueError`` /
``TypeError`` naming the argument and the value, raised before any work starts."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

import mt5fn

CFG = mt5fn.MT5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2, model_type="mt5")
PARAMS = mt5fn.init_params(CFG, seed=0)
IDS = torch.randint(2, 40, (2, 5), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), r"max_new_tokens must be an int >= 1, got 0"),
    (dict(max_new_tokens=2.5), r"max_new_tokens must be an int >= 1, got 2.5"),
    (dict(max_new_tokens=True), r"max_new_tokens must be an int >= 1, got True"),
    (dict(max_new_tokens=4, min_new_tokens=-1), r"min_new_tokens must be an int >= 0, got -1"),
    (dict(max_new_tokens=4, num_beams=0), r"num_beams must be an int >= 1, got 0"),
    (dict(max_new_tokens=4, num_beams=2, num_return_sequences=3),
     r"num_return_sequences \(3\) must be <= num_beams \(2\)"),
    (dict(max_new_tokens=4, num_return_sequences=2),
     r"greedy decoding returns one sequence.*got num_return_sequences=2"),
    (dict(max_new_tokens=4, top_p=0.0), r"top_p must lie in \(0, 1\], got 0.0"),
    (dict(max_new_tokens=4, top_p=1.5, do_sample=True), r"top_p must lie in \(0, 1\], got 1.5"),
    (dict(max_new_tokens=4, top_p=-0.1), r"top_p must lie in \(0, 1\], got -0.1"),
    (dict(max_new_tokens=4, do_sample=True, temperature=0.0), r"temperature must be > 0 when sampling, got 0.0"),
    (dict(max_new_tokens=4, do_sample=True, temperature=-1.0), r"temperature must be > 0 when sampling, got -1.0"),
    (dict(max_new_tokens=4, temperature=float("nan")), r"temperature must be a finite number, got nan"),
    (dict(max_new_tokens=4, top_k=0), r"top_k must be an int >= 1, got 0"),
    (dict(max_new_tokens=4, early_stopping="sometimes"),
     r"early_stopping must be True, False or 'never', got 'sometimes'"),
    (dict(max_new_tokens=4, early_stopping=1), r"early_stopping must be True, False or 'never', got 1"),
    (dict(max_new_tokens=4, length_penalty=float("inf")), r"length_penalty must be a finite number, got inf"),
    (dict(max_new_tokens=4, repetition_penalty=0.0), r"repetition_penalty must be > 0, got 0.0"),
    (dict(max_new_tokens=4, no_repeat_ngram_size=-2), r"no_repeat_ngram_size must be an int >= 0, got -2"),
    (dict(max_new_tokens=4, do_sample="yes"), r"do_sample must be a bool, got 'yes'"),
    (dict(max_new_tokens=4, generator=0), r"generator must be a torch.Generator or None, got int"),
])
def test_bad_generate_arguments_raise_before_any_work(kwargs, match):
    with mock.patch("mt5fn.decoding._generate.encode", side_effect=AssertionError("work started")):
        with pytest.raises(ValueError, match=match):
            mt5fn.generate(PARAMS, CFG, IDS, **kwargs)


@pytest.mark.parametrize("ids, match", [
    (torch.tensor([[3, 40, 5]]), r"input_ids must lie in \[0, vocab_size=40\), got value 40"),
    (torch.tensor([[3, -1, 5]]), r"input_ids must lie in \[0, vocab_size=40\), got value -1"),
    (torch.tensor([3, 4, 5]), r"input_ids must have shape \(batch, length\)"),
])
def test_bad_input_ids(ids, match):
    with mock.patch("mt5fn.decoding._generate.encode", side_effect=AssertionError("work started")):
        with pytest.raises(ValueError, match=match):
            mt5fn.generate(PARAMS, CFG, ids, max_new_tokens=3)


def test_bad_mask_and_types():
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 5\)"):
        mt5fn.generate(PARAMS, CFG, IDS, torch.ones(2, 4), max_new_tokens=3)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        mt5fn.generate(PARAMS, CFG, IDS.float(), max_new_tokens=3)
    with pytest.raises(TypeError, match="cfg must be an MT5Config"):
        mt5fn.generate(PARAMS, {"vocab_size": 40}, IDS, max_new_tokens=3)


def test_cache_too_small_and_bad_cache_arguments():
    hidden = mt5fn.encode(PARAMS, CFG, IDS)
    with pytest.raises(ValueError, match=r"max_length must be an int >= 1, got 0"):
        mt5fn.init_cache(PARAMS, CFG, hidden, None, 0)
    with pytest.raises(ValueError, match=r"encoder_hidden must have shape \(batch, length, d_model=8\)"):
        mt5fn.init_cache(PARAMS, CFG, hidden[..., :4], None, 3)
    cache = mt5fn.init_cache(PARAMS, CFG, hidden, None, 3)
    _, cache = mt5fn.decode_step(PARAMS, CFG, cache, IDS[:, :2])
    with pytest.raises(ValueError, match=r"cache too small: it holds 3 slots, 2 are written and token_ids adds 2"):
        mt5fn.decode_step(PARAMS, CFG, cache, IDS[:, :2])
    with pytest.raises(ValueError, match=r"token_ids has 4 tokens but the cache holds 3 slots"):
        mt5fn.decode_step(PARAMS, CFG, mt5fn.init_cache(PARAMS, CFG, hidden, None, 3), IDS[:, :4])
    with pytest.raises(ValueError, match=r"token_ids has batch size 1 but the cache holds 2 rows"):
        mt5fn.decode_step(PARAMS, CFG, cache, IDS[:1, :1])
    with pytest.raises(ValueError, match=r"token_ids must lie in \[0, vocab_size=40\), got value 99"):
        mt5fn.decode_step(PARAMS, CFG, cache, torch.tensor([[99], [1]]))
    with pytest.raises(TypeError, match="cache must be a DecodeCache"):
        mt5fn.decode_step(PARAMS, CFG, {"self_key": None}, IDS[:, :1])
    other = CFG.replace(num_heads=1, d_kv=8)
    with pytest.raises(ValueError,
                       match=r"cache has \(layers, heads, d_kv\) = \(1, 2, 4\) but the config has \(1, 1, 8\)"):
        mt5fn.decode_step(mt5fn.init_params(other), other, cache, IDS[:, :1])


def test_cache_is_a_pytree():
    from torch.utils import _pytree as pytree

    cache = mt5fn.init_cache(PARAMS, CFG, mt5fn.encode(PARAMS, CFG, IDS), None, 4)
    leaves, spec = pytree.tree_flatten(cache)
    assert len(leaves) == 6 and all(isinstance(leaf, torch.Tensor) for leaf in leaves)
    assert cache.position.dim() == 0 and cache.position.dtype == torch.long
    assert cache.self_key.shape == (CFG.num_decoder_layers, 2, CFG.num_heads, 4, CFG.d_kv)
    rebuilt = pytree.tree_unflatten(leaves, spec)
    assert isinstance(rebuilt, mt5fn.DecodeCache) and rebuilt.self_key is cache.self_key


def test_thread_setting_is_restored_and_its_override_checked(monkeypatch):
    before = torch.get_num_threads()
    mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=2)
    assert torch.get_num_threads() == before  # the loop's one-thread setting does not leak
    monkeypatch.setenv("MT5FN_DECODE_LOOP_THREADS", "two")
    with pytest.raises(ValueError, match="MT5FN_DECODE_LOOP_THREADS must be 'auto' or an int, got 'two'"):
        mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=2)
    assert torch.get_num_threads() == before



def test_each_call_measures_one_thread_against_all_for_the_step_and_keeps_the_faster(monkeypatch):
    from mt5fn.decoding._threads import StepThreads
    monkeypatch.delenv("MT5FN_DECODE_LOOP_THREADS", raising=False)
    for slow, fast in ((1, 4), (4, 1)):
        threads = StepThreads(4)
        used = []
        for _ in range(8):
            count = threads.next()
            used.append(count)
            threads.record(count, 0.010 if count == fast else 0.030)
        assert used[:5] == [1, 4, 1, 4, 1]  # step 0 (the prefix) is not timed; steps 1-4 probe both
        assert used[5:] == [fast] * 3
    monkeypatch.setenv("MT5FN_DECODE_LOOP_THREADS", "3")
    assert StepThreads(4).options == [3]
    monkeypatch.setenv("MT5FN_DECODE_LOOP_THREADS", "0")
    assert StepThreads(4).options == [torch.get_num_threads()]
    monkeypatch.delenv("MT5FN_DECODE_LOOP_THREADS")
    assert StepThreads(1).options == [1]


# ------------------------------------------------------------------ encoder outputs, prefixes, scores, stream
HIDDEN = mt5fn.encode(PARAMS, CFG, IDS)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(encoder_outputs=HIDDEN[..., :4]), ValueError,
     r"encoder_outputs must have shape \(batch, length, d_model=8\), got shape \(2, 5, 4\)"),
    (dict(encoder_outputs=HIDDEN.double()), TypeError,
     r"encoder_outputs has dtype torch.float64 but the parameters have torch.float32"),
    (dict(encoder_outputs=HIDDEN.long()), TypeError, r"encoder_outputs must be a floating tensor"),
    (dict(encoder_outputs=HIDDEN[:, :3]), ValueError,
     r"input_ids has shape \(2, 5\) but encoder_outputs has \(batch, length\) \(2, 3\)"),
    (dict(encoder_outputs=HIDDEN[:0], input_ids=None), ValueError, r"encoder_outputs must hold at least one row"),
    (dict(encoder_outputs=HIDDEN, input_ids=None, attention_mask=torch.ones(2, 4)), ValueError,
     r"attention_mask must have the shape of encoder_outputs\[\.\.\., 0\] \(2, 5\)"),
    (dict(input_ids=None), ValueError, r"input_ids must be given \(or the encoder output as encoder_outputs=\)"),
    (dict(decoder_input_ids=torch.tensor([[3, 4]])), ValueError,
     r"decoder_input_ids has batch size 1 but the input has 2"),
    (dict(decoder_input_ids=torch.tensor([[0, 4], [5, 6]])), ValueError,
     r"some rows begin with decoder_start_token_id=0 and rows \[1\] do not"),
    (dict(decoder_input_ids=torch.tensor([[3, 40], [5, 6]])), ValueError,
     r"decoder_input_ids must lie in \[0, vocab_size=40\), got value 40"),
    (dict(decoder_input_ids=torch.tensor([3, 4])), ValueError, r"decoder_input_ids must have shape \(batch, length\)"),
    (dict(output_scores=1), ValueError, r"output_scores must be a bool, got 1"),
])
def test_bad_encoder_outputs_prefixes_and_scores_raise_before_any_work(kwargs, error, match):
    call = dict(input_ids=IDS, max_new_tokens=3) | kwargs
    with mock.patch("mt5fn.decoding._generate.encode", side_effect=AssertionError("work started")):
        with pytest.raises(error, match=match):
            mt5fn.generate(PARAMS, CFG, **call)
        with pytest.raises(error, match=match):
            mt5fn.stream(PARAMS, CFG, **call)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_beams=2), r"stream decodes greedily or by sampling; num_beams=2 asks for beam search"),
    (dict(output_scores=True), r"stream yields tokens only; output_scores=True is a generate setting"),
    (dict(max_new_tokens=0), r"max_new_tokens must be an int >= 1, got 0"),
    (dict(generator=1), r"generator must be a torch.Generator or None, got int"),
])
def test_stream_refuses_before_the_first_step(kwargs, match):
    with mock.patch("mt5fn.decoding._generate.encode", side_effect=AssertionError("work started")):
        with pytest.raises(ValueError, match=match):
            mt5fn.stream(PARAMS, CFG, IDS, **(dict(max_new_tokens=3) | kwargs))


def test_stream_leaves_no_state_between_steps():
    before = torch.get_num_threads()
    steps = mt5fn.stream(PARAMS, CFG, IDS, max_new_tokens=3, min_new_tokens=3)
    for tokens in steps:
        assert not torch.is_inference_mode_enabled() and torch.get_num_threads() == before
        assert tokens.shape == (2,)


def test_output_scores_result_and_generation_config_round_trip():
    out = mt5fn.generate(PARAMS, CFG, IDS, max_new_tokens=3, output_scores=True)
    assert isinstance(out, mt5fn.GenerateOutput) and out.sequences.shape[0] == 2
    assert out.scores.shape == (2, out.sequences.shape[1] - 1) and out.scores.dtype == torch.float32
    gc = mt5fn.GenerationConfig(max_new_tokens=3, output_scores=True)
    assert gc.to_hf()["return_dict_in_generate"] is True
    assert mt5fn.GenerationConfig.from_hf(gc.to_hf()).output_scores is True
    # without return_dict_in_generate transformers returns ids alone too
    assert mt5fn.GenerationConfig.from_hf({"output_scores": True}).output_scores is False
