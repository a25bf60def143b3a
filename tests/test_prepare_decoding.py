"""``prepare_decoding`` and the weight-leaf forms: no hidden state, no stale results, thread safety,
clear errors for trees that do not fit, and ``GenerationConfig`` in and out of transformers' format."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

import mt5fn
from mt5fn.functional import linear_form

CFG = mt5fn.MT5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2, model_type="mt5")
IDS = torch.randint(2, 40, (2, 6), generator=torch.Generator().manual_seed(0))


def _params(seed: int) -> dict:
    return mt5fn.init_params(CFG, seed=seed)


def _greedy(params: dict, **kwargs) -> torch.Tensor:
    return mt5fn.generate(params, CFG, IDS, max_new_tokens=6, min_new_tokens=6, **kwargs)


def _reference(params: dict, steps: int = 6) -> torch.Tensor:
    """Greedy decoding by teacher forcing the whole prefix at every step (no cache, no layouts)."""
    out = torch.full((IDS.shape[0], 1), CFG.decoder_start_token_id)
    for _ in range(steps):
        logits = mt5fn.forward(params, CFG, IDS, out)[:, -1]
        logits[:, CFG.eos_token_id] = -float("inf")  # min_new_tokens == steps
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], 1)
    return out


# ------------------------------------------------------------------ never stale
OVERWRITES = {
    "data.copy_": lambda leaf, new: leaf.data.copy_(new),
    "assign .data": lambda leaf, new: setattr(leaf, "data", new.clone()),
    "numpy view": lambda leaf, new: np.copyto(leaf.detach().numpy(), new.numpy()),
}


@pytest.mark.parametrize("how", sorted(OVERWRITES))
def test_generate_uses_weights_overwritten_without_a_version_bump(how):
    """The issue's reproduction: overwrite every leaf behind autograd's back; generate sees it."""
    params, other = _params(0), _params(1)
    first = _greedy(params)
    for leaf, new in zip(mt5fn.flatten_params(params).values(), mt5fn.flatten_params(other).values()):
        OVERWRITES[how](leaf, new)
    assert torch.equal(_greedy(params), _greedy(other))
    assert torch.equal(_greedy(params), _reference(other))
    assert not torch.equal(first, _greedy(params))


def test_generate_follows_in_place_weight_updates():
    """Nothing is remembered between calls: weights changed in place are always the ones decoded with."""
    cfg = mt5fn.MT5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2, model_type="mt5")
    params = mt5fn.init_params(cfg, seed=0)
    ids = torch.randint(2, 30, (2, 4), generator=torch.Generator().manual_seed(0))
    before = mt5fn.generate(params, cfg, ids, max_new_tokens=5, min_new_tokens=5)
    with torch.no_grad():
        params["lm_head"][before[0, 1]] -= 100.0  # the first greedy token can no longer win
        params["decoder"]["blocks"][0]["mlp"]["wo"].mul_(3.0)
    after = mt5fn.generate(params, cfg, ids, max_new_tokens=5, min_new_tokens=5)
    assert after[0, 1] != before[0, 1]


def test_generate_after_vector_to_parameters():
    module, other = mt5fn.MT5Module(CFG, _params(0)), _params(1)
    _greedy(module.params())
    torch.nn.utils.vector_to_parameters(
        torch.nn.utils.parameters_to_vector(mt5fn.MT5Module(CFG, other).parameters()), module.parameters())
    assert torch.equal(_greedy(module.params()), _reference(other))


def test_prepare_decoding_is_pure_and_shares_what_it_does_not_relayout():
    params = _params(0)
    before = {path: leaf.clone() for path, leaf in mt5fn.flatten_params(params).items()}
    fast = mt5fn.prepare_decoding(params, CFG, rows=2)
    for path, leaf in mt5fn.flatten_params(params).items():
        assert torch.equal(leaf, before[path]), path
    assert fast["shared"] is params["shared"] and fast["encoder"] is params["encoder"]
    assert set(fast["decoder"]["blocks"][0]["self_attn"]) == {"qkv", "o"}
    assert mt5fn.prepare_decoding(fast, CFG) is fast  # already prepared


def test_held_prepared_tree_gives_the_same_tokens_for_every_method():
    params = _params(0)
    for rows, kwargs in ((2, {}), (6, dict(num_beams=3)), (4, dict(do_sample=True, num_return_sequences=2))):
        fast = mt5fn.prepare_decoding(params, CFG, rows=rows, min_numel=0)
        seed = dict(generator=torch.Generator().manual_seed(0)) if kwargs.get("do_sample") else {}
        again = dict(generator=torch.Generator().manual_seed(0)) if seed else {}
        assert torch.equal(_greedy(fast, **kwargs, **seed), _greedy(params, **kwargs, **again))


def test_prepared_forms_on_a_large_model_slice():
    """Above the size threshold the head really takes the column / oneDNN forms, and still decodes right."""
    cfg = CFG.replace(vocab_size=5000, d_model=32, d_ff=48)
    params = mt5fn.init_params(cfg, seed=0)
    ids = torch.randint(2, 5000, (1, 5), generator=torch.Generator().manual_seed(1))
    one, many = mt5fn.prepare_decoding(params, cfg, rows=1), mt5fn.prepare_decoding(params, cfg, rows=4)
    assert linear_form(one["lm_head"]) == "columns"
    if torch.backends.mkldnn.is_available():
        assert linear_form(many["lm_head"]) == "onednn"
    expected = mt5fn.generate(params, cfg, ids, max_new_tokens=5)
    assert torch.equal(mt5fn.generate(one, cfg, ids, max_new_tokens=5), expected)
    assert torch.equal(mt5fn.generate(many, cfg, ids, max_new_tokens=5), expected)


# ------------------------------------------------------------------ threads
def test_two_models_generate_in_two_threads_as_in_sequence():
    models = [_params(0), _params(1)]
    ids = [IDS, IDS.flip(0)]
    sequential = [mt5fn.generate(p, CFG, x, max_new_tokens=8, num_beams=2) for p, x in zip(models, ids)]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                results[index].append(mt5fn.generate(models[index], CFG, ids[index], max_new_tokens=8, num_beams=2))
        except BaseException as error:  # noqa: BLE001 -- re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index in (0, 1):
        assert len(results[index]) == 5
        assert all(torch.equal(out, sequential[index]) for out in results[index])


# ------------------------------------------------------------------ bad trees
def test_prepared_tree_with_another_config_names_the_path():
    fast = mt5fn.prepare_decoding(_params(0), CFG, rows=1)
    with pytest.raises(ValueError, match=r"params: encoder\.rel_bias has shape \(32, 2\) but the config needs "
                                         r"\(32, 4\)"):
        mt5fn.generate(fast, CFG.replace(num_heads=4), IDS, max_new_tokens=2)
    wider = mt5fn.init_params(CFG.replace(num_heads=4), seed=0)
    fast["encoder"], fast["decoder"]["rel_bias"] = wider["encoder"], wider["decoder"]["rel_bias"]
    with pytest.raises(ValueError, match=r"params: decoder\.blocks\.0\.self_attn\.qkv has \(out, in\) = "
                                         r"\(24, 16\) but the config needs \(48, 16\)"):
        mt5fn.decode_step(fast, CFG.replace(num_heads=4), None, IDS)
    with pytest.raises(ValueError, match=r"decoder\.blocks must be a list of 3 blocks"):
        mt5fn.generate(mt5fn.prepare_decoding(_params(0), CFG), CFG.replace(num_decoder_layers=3), IDS,
                       max_new_tokens=2)


def test_unknown_leaf_form_names_the_path():
    params = _params(0)
    params["decoder"]["blocks"][1]["mlp"]["wo"] = {"packed": params["decoder"]["blocks"][1]["mlp"]["wo"]}
    with pytest.raises(ValueError, match=r"params: decoder\.blocks\.1\.mlp\.wo: not a weight-leaf form"):
        mt5fn.generate(params, CFG, IDS, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"decoder\.blocks\.1\.mlp\.wo"):
        mt5fn.prepare_decoding(params, CFG)


def test_prepare_decoding_bad_rows():
    with pytest.raises(ValueError, match=r"rows must be an int >= 1, got 0"):
        mt5fn.prepare_decoding(_params(0), CFG, rows=0)


# ------------------------------------------------------------------ GenerationConfig
def test_generation_config_and_overrides_equal_keywords():
    params = _params(0)
    gc = mt5fn.GenerationConfig(max_new_tokens=5, num_beams=3, length_penalty=0.5)
    assert torch.equal(mt5fn.generate(params, CFG, IDS, config=gc),
                       mt5fn.generate(params, CFG, IDS, max_new_tokens=5, num_beams=3, length_penalty=0.5))
    assert torch.equal(mt5fn.generate(params, CFG, IDS, None, gc, num_beams=1),
                       mt5fn.generate(params, CFG, IDS, max_new_tokens=5))


@pytest.mark.parametrize("field, value, match", [
    ("max_new_tokens", 0, r"max_new_tokens must be an int >= 1, got 0"),
    ("num_beams", "4", r"num_beams must be an int >= 1, got '4'"),
    ("temperature", float("nan"), r"temperature must be a finite number, got nan"),
    ("top_p", 2.0, r"top_p must lie in \(0, 1\], got 2.0"),
    ("do_sample", 1, r"do_sample must be a bool, got 1"),
    ("early_stopping", "yes", r"early_stopping must be True, False or 'never', got 'yes'"),
])
def test_generation_config_field_errors_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        mt5fn.GenerationConfig(**{field: value})


def test_generation_config_unknown_override_and_missing_length():
    with pytest.raises(TypeError, match=r"unknown generation settings \['beams'\]"):
        mt5fn.generate(_params(0), CFG, IDS, max_new_tokens=2, beams=2)
    with pytest.raises(ValueError, match=r"max_new_tokens must be given"):
        mt5fn.generate(_params(0), CFG, IDS)
    with pytest.raises(TypeError, match=r"config must be an mt5fn.GenerationConfig"):
        mt5fn.generate(_params(0), CFG, IDS, config={"max_new_tokens": 2})


def test_generation_config_from_and_to_transformers(tmp_path):
    from transformers import GenerationConfig as HFGenerationConfig

    hf = HFGenerationConfig(max_new_tokens=7, num_beams=4, length_penalty=0.6, early_stopping=True,
                            no_repeat_ngram_size=3, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    hf.save_pretrained(tmp_path)
    gc = mt5fn.GenerationConfig.from_hf(tmp_path / "generation_config.json")
    assert (gc.max_new_tokens, gc.num_beams, gc.length_penalty, gc.early_stopping, gc.no_repeat_ngram_size) == \
        (7, 4, 0.6, True, 3)
    back = HFGenerationConfig(**gc.to_hf())
    for name, value in gc.to_hf().items():
        assert getattr(back, name) == value, name
    assert mt5fn.GenerationConfig.from_hf({"max_length": 20, "foo": 1}).max_new_tokens == 19
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"bad\.json: not UTF-8"):
        mt5fn.GenerationConfig.from_hf(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError, match=r"list\.json: does not hold a JSON object"):
        mt5fn.GenerationConfig.from_hf(tmp_path / "list.json")
