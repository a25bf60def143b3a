"""MT5Config: transformers' field names, defaults per model_type, presets, validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import transformers

import mt5fn
from mt5fn import MT5Config


def test_frozen_and_hashable():
    cfg = MT5Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3  # type: ignore[misc]
    assert hash(cfg) == hash(MT5Config())
    assert {cfg: 1}[MT5Config()] == 1


def test_resolved_defaults():
    cfg = MT5Config(num_layers=3, pad_token_id=5)
    assert cfg.num_decoder_layers == 3
    assert cfg.decoder_start_token_id == 5
    assert cfg.is_gated and cfg.activation == "gelu_new"
    assert MT5Config(feed_forward_proj="gelu").activation == "gelu"  # plain gelu is the erf form
    assert not MT5Config(feed_forward_proj="relu").is_gated


@pytest.mark.parametrize("model_type", ["t5", "mt5", "umt5"])
def test_from_hf_reads_transformers_configs(model_type, tmp_path):
    hf = transformers.CONFIG_MAPPING[model_type](
        vocab_size=99, d_model=20, d_kv=7, d_ff=33, num_layers=3, num_decoder_layers=2, num_heads=5,
        relative_attention_num_buckets=16, relative_attention_max_distance=50, feed_forward_proj="gated-silu",
        dropout_rate=0.2, layer_norm_epsilon=1e-5, decoder_start_token_id=0)
    hf.save_pretrained(tmp_path)
    for source in (hf.to_dict(), tmp_path, tmp_path / "config.json", str(tmp_path)):
        cfg = MT5Config.from_hf(source)
        assert (cfg.model_type, cfg.vocab_size, cfg.d_model, cfg.d_kv, cfg.d_ff) == (model_type, 99, 20, 7, 33)
        assert (cfg.num_layers, cfg.num_decoder_layers, cfg.num_heads) == (3, 2, 5)
        assert (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) == (16, 50)
        assert cfg.feed_forward_proj == "gated-silu" and cfg.dropout_rate == 0.2
        assert cfg.layer_norm_epsilon == 1e-5
        assert cfg.scale_decoder_outputs == getattr(hf, "scale_decoder_outputs", False)


def test_from_hf_takes_transformers_defaults_for_absent_fields():
    for model_type in ("t5", "mt5", "umt5"):
        ours = MT5Config.from_hf({"model_type": model_type})
        theirs = transformers.CONFIG_MAPPING[model_type]()
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
                     "layer_norm_epsilon", "feed_forward_proj", "pad_token_id", "eos_token_id"):
            assert getattr(ours, name) == getattr(theirs, name), (model_type, name)


def test_from_hf_ignores_unknown_keys_and_takes_first_eos():
    cfg = MT5Config.from_hf({"model_type": "t5", "n_positions": 512, "task_specific_params": {"x": 1},
                             "eos_token_id": [1, 2], "output_past": True})
    assert cfg.eos_token_id == 1


def test_output_scaling_follows_transformers():
    # Hub configs: T5 v1.0 omits tie_word_embeddings (scaled); v1.1 says false (not scaled).
    assert MT5Config.from_hf({"model_type": "t5"}).scale_decoder_outputs
    assert not MT5Config.from_hf({"model_type": "t5", "tie_word_embeddings": False}).scale_decoder_outputs
    assert not MT5Config.from_hf({"model_type": "mt5", "tie_word_embeddings": True}).scale_decoder_outputs
    assert MT5Config.from_hf({"model_type": "umt5"}).scale_decoder_outputs
    # Configs saved by transformers 5 say tie_word_embeddings=true and carry the resolved flag.
    saved = transformers.T5Config(tie_word_embeddings=False).to_dict()
    assert saved["tie_word_embeddings"] is True
    assert not MT5Config.from_hf(saved).scale_decoder_outputs


@pytest.mark.parametrize("model_type", ["t5", "mt5", "umt5"])
def test_to_hf_round_trips_through_transformers(model_type, tmp_path):
    cfg = MT5Config(model_type=model_type, vocab_size=77, d_model=12, d_kv=5, d_ff=30, num_layers=2,
                    num_decoder_layers=3, num_heads=3, feed_forward_proj="relu", tie_word_embeddings=True)
    assert MT5Config.from_hf(cfg.to_hf()) == cfg
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_hf()))
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == model_type and hf.num_decoder_layers == 3 and hf.d_kv == 5
    assert MT5Config.from_hf(hf.to_dict()) == cfg


def test_presets_have_published_shapes():
    small = MT5Config.preset("mt5-small")
    assert (small.vocab_size, small.d_model, small.d_ff, small.num_heads, small.num_layers) == (250112, 512, 1024, 6, 8)
    assert not small.tie_word_embeddings and small.model_type == "mt5"
    xxl = MT5Config.preset("google/mt5-xxl")
    assert (xxl.d_model, xxl.d_ff, xxl.num_heads, xxl.num_layers) == (4096, 10240, 64, 24)
    t5 = MT5Config.preset("t5-small")
    assert t5.feed_forward_proj == "relu" and t5.tie_word_embeddings and t5.scale_decoder_outputs
    assert MT5Config.preset("t5-v1_1-large").d_ff == 2816
    assert MT5Config.preset("umt5-small").vocab_size == 256384
    # t5-small has 60,506,624 parameters (tied head counted once).
    assert mt5fn.num_params(mt5fn.init_params(t5)) == 60_506_624
    with pytest.raises(ValueError, match="unknown preset 'mt5-tiny'"):
        MT5Config.preset("mt5-tiny")


@pytest.mark.parametrize("field,value", [
    ("d_model", 0), ("num_heads", -1), ("d_kv", 2.5), ("vocab_size", True), ("num_layers", "2"),
    ("dropout_rate", 1.0), ("dropout_rate", -0.1), ("layer_norm_epsilon", 0.0),
    ("feed_forward_proj", "gated-gelu-new"), ("feed_forward_proj", "swiglu"), ("feed_forward_proj", "geglu-x"),
    ("model_type", "bart"), ("pad_token_id", 10**9), ("eos_token_id", -1), ("relative_attention_num_buckets", 2),
    ("tie_word_embeddings", "yes"),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MT5Config(**{field: value})


def test_from_hf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MT5Config.from_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MT5Config.from_hf(tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        MT5Config.from_hf({"model_type": "bert"})


@pytest.mark.parametrize("flag", [0, 1, "false", "true", None, [], False, True])
def test_flags_read_as_transformers_reads_them(flag):
    # transformers 5.24: tied unless tie_word_embeddings is exactly False (0 and "false" read as tied),
    # and T5 / UMT5 scale the decoder output exactly when tied.
    for model_type in ("t5", "umt5"):
        hf = transformers.CONFIG_MAPPING[model_type](tie_word_embeddings=flag)
        ours = MT5Config.from_hf({"model_type": model_type, "tie_word_embeddings": flag})
        assert ours.scale_decoder_outputs == hf.scale_decoder_outputs, (model_type, flag)
        assert ours.tie_word_embeddings == (flag is not False)


def test_stored_scale_flag_reads_by_truth_value_and_mt5_never_scales():
    # transformers tests config.scale_decoder_outputs with a plain `if`
    assert MT5Config.from_hf({"model_type": "t5", "scale_decoder_outputs": "false"}).scale_decoder_outputs
    assert not MT5Config.from_hf({"model_type": "t5", "scale_decoder_outputs": 0}).scale_decoder_outputs
    assert not MT5Config.from_hf({"model_type": "mt5", "scale_decoder_outputs": True}).scale_decoder_outputs
    with pytest.raises(ValueError, match="scale_decoder_outputs must be False for model_type 'mt5'"):
        MT5Config(model_type="mt5", scale_decoder_outputs=True)


@pytest.mark.parametrize("buckets,distance", [(4, 1), (4, 2), (8, 4), (32, 2), (32, 16)])
def test_bucket_settings_that_run_negative_are_refused(buckets, distance):
    # At max_distance <= num_buckets // 2 the log-spaced buckets divide by log(1) or run negative:
    # transformers then raises IndexError on any input longer than the exact region.
    with pytest.raises(ValueError, match=rf"relative_attention_max_distance must be > relative_attention_num_buckets "
                                         rf"// 2 = {buckets // 2}, got {distance}"):
        MT5Config(relative_attention_num_buckets=buckets, relative_attention_max_distance=distance)


def test_smallest_accepted_bucket_settings_work_on_long_inputs():
    import torch

    for buckets in (4, 5, 8, 32):
        cfg = MT5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                        relative_attention_num_buckets=buckets, relative_attention_max_distance=buckets // 2 + 1)
        ids = torch.randint(0, 30, (1, 300))
        assert mt5fn.forward(mt5fn.init_params(cfg), cfg, ids, ids).shape == (1, 300, 30)


@pytest.mark.parametrize("field,value", [
    ("layer_norm_epsilon", float("inf")), ("layer_norm_epsilon", float("nan")), ("dropout_rate", float("nan")),
    ("vocab_size", 2 ** 31), ("d_model", 10 ** 30), ("num_decoder_layers", 0), ("decoder_start_token_id", -1),
    ("scale_decoder_outputs", 1), ("layer_norm_epsilon", 10 ** 400),
])
def test_more_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MT5Config(**{field: value})


def test_from_hf_errors_name_the_file(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00 binary")
    with pytest.raises(ValueError, match=rf"{tmp_path}/config.json: not UTF-8 text"):
        MT5Config.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512.0}))
    with pytest.raises(ValueError, match=rf"{tmp_path}/config.json: d_model must be an int"):
        MT5Config.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "eos_token_id": []}))
    with pytest.raises(ValueError, match=rf"{tmp_path}/config.json: eos_token_id is an empty list"):
        MT5Config.from_hf(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        MT5Config.from_hf(tmp_path)
    with pytest.raises(TypeError, match="config must be a dict, a config.json path or its directory, got int"):
        MT5Config.from_hf(3)
