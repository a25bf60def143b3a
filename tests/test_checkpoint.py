"""load_pretrained / save_pretrained against transformers' own checkpoints.

Round trip for every model type, both weight formats, sharded and not:
transformers model -> its checkpoint -> ``load_pretrained`` -> ``save_pretrained``
-> ``AutoModelForSeq2SeqLM.from_pretrained``, with equal logits at each step,
no missing or unexpected keys, and the head tied exactly when it was tied.
Plus: atomic saves under injected failures, dtype conversion, aliases, and
the resident memory of a memory-mapped load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mt5fn
import spm
from reference import hf_model

ATOL = 1e-5
CONFIGS = {
    "t5": dict(model_type="t5", feed_forward_proj="relu", tie_word_embeddings=True),
    "t5-v1_1": dict(model_type="t5", feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "mt5": dict(model_type="mt5", feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "umt5": dict(model_type="umt5", feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def tiny(kind: str, **changes) -> mt5fn.MT5Config:
    values = dict(vocab_size=96, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=3, num_heads=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)
    return mt5fn.MT5Config(**{**values, **CONFIGS[kind], **changes})


def inputs(cfg: mt5fn.MT5Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, cfg.vocab_size, (2, 7), generator=g)
    dec = torch.randint(3, cfg.vocab_size, (2, 5), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, dec, mask


def hf_logits(model, cfg) -> torch.Tensor:
    ids, dec, mask = inputs(cfg)
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=dec, attention_mask=mask).logits


def our_logits(params, cfg) -> torch.Tensor:
    ids, dec, mask = inputs(cfg)
    with torch.no_grad():
        return mt5fn.forward(params, cfg, ids, dec, attention_mask=mask)


def save_bin(model, path, sharded: bool) -> None:
    """A ``.bin`` checkpoint as transformers 4 wrote it: every state_dict key, aliases sharing storage."""
    os.makedirs(path)
    model.config.save_pretrained(path)
    state = model.state_dict()
    if not sharded:
        torch.save(state, os.path.join(path, "pytorch_model.bin"))
        return
    names = list(state)
    parts = [names[i::3] for i in range(3)]
    weight_map = {}
    for i, part in enumerate(parts, start=1):
        file = f"pytorch_model-{i:05d}-of-00003.bin"
        torch.save({name: state[name] for name in part}, os.path.join(path, file))
        weight_map.update(dict.fromkeys(part, file))
    with open(os.path.join(path, "pytorch_model.bin.index.json"), "w") as handle:
        json.dump({"metadata": {}, "weight_map": weight_map}, handle)


def hf_load(path):
    import transformers

    model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, output_loading_info=True)
    model.set_attn_implementation("eager")
    return model.eval(), info


def assert_trees_equal(a: dict, b: dict) -> None:
    fa, fb = mt5fn.flatten_params(a), mt5fn.flatten_params(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fa[name].dtype == fb[name].dtype and torch.equal(fa[name], fb[name]), name


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("kind", ["t5", "t5-v1_1", "mt5", "umt5"])
def test_round_trip_through_transformers(tmp_path, kind, fmt, sharded):
    cfg = tiny(kind)
    reference = hf_model(cfg, mt5fn.init_params(cfg, seed=3))
    expected = hf_logits(reference, cfg)
    theirs = tmp_path / "theirs"
    if fmt == "safetensors":
        reference.save_pretrained(theirs, max_shard_size="4KB" if sharded else "5GB")
        assert (theirs / ("model.safetensors.index.json" if sharded else "model.safetensors")).exists()
    else:
        save_bin(reference, theirs, sharded)

    loaded_cfg, params = mt5fn.load_pretrained(theirs)
    assert ("lm_head" in params) == (not CONFIGS[kind]["tie_word_embeddings"])
    assert loaded_cfg.tie_word_embeddings == ("lm_head" not in params)
    assert loaded_cfg.scale_decoder_outputs == cfg.scale_decoder_outputs
    torch.testing.assert_close(our_logits(params, loaded_cfg), expected, atol=ATOL, rtol=0)

    ours = tmp_path / "ours"
    mt5fn.save_pretrained(params, loaded_cfg, ours, max_shard_size="4KB" if sharded else "5GB")
    files = sorted(os.listdir(ours))
    assert ("model.safetensors.index.json" in files) == sharded and "config.json" in files
    assert not any(name.endswith(".bin") for name in files)
    model, info = hf_load(ours)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert type(model).__name__ == type(reference).__name__
    tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    assert tied == ("lm_head" not in params)
    torch.testing.assert_close(model.lm_head.weight.detach(), params.get("lm_head", params["shared"]),
                               atol=0, rtol=0)
    torch.testing.assert_close(hf_logits(model, cfg), expected, atol=ATOL, rtol=0)

    again_cfg, again = mt5fn.load_pretrained(ours)
    assert again_cfg == loaded_cfg
    assert_trees_equal(again, params)


def test_config_written_for_transformers(tmp_path):
    """Untied t5/umt5 state their scaling explicitly; mT5 has no such field; tying follows the weights."""
    for kind in ("t5", "t5-v1_1", "mt5", "umt5"):
        cfg = tiny(kind)
        mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, tmp_path / kind)
        config = json.loads((tmp_path / kind / "config.json").read_text())
        assert config["model_type"] == cfg.model_type and config["dtype"] == "float32"
        assert config["tie_word_embeddings"] is cfg.tie_word_embeddings
        assert config["num_decoder_layers"] == 3
        if cfg.model_type == "mt5":
            assert "scale_decoder_outputs" not in config
        else:
            assert config["scale_decoder_outputs"] is cfg.scale_decoder_outputs
        generation = json.loads((tmp_path / kind / "generation_config.json").read_text())
        assert generation == {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}


def test_aliases_and_a_head_equal_to_the_embedding(tmp_path):
    """Only ``encoder.embed_tokens.weight`` present, and an ``lm_head.weight`` copy: a tied model."""
    from safetensors.torch import save_file

    cfg = tiny("t5")
    params = mt5fn.init_params(cfg, seed=1)
    state = {k: v.clone() for k, v in mt5fn.to_hf_state_dict(params, cfg).items()
             if k not in ("shared.weight", "decoder.embed_tokens.weight")}
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg.to_hf()))
    save_file(state, tmp_path / "ckpt" / "model.safetensors")
    loaded_cfg, loaded = mt5fn.load_pretrained(tmp_path / "ckpt")
    assert "lm_head" not in loaded and loaded_cfg.tie_word_embeddings
    assert_trees_equal(loaded, params)


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16", "torch.float64"])
def test_dtype_conversion_on_load_and_save(tmp_path, dtype):
    cfg = tiny("mt5")
    params = mt5fn.init_params(cfg, seed=2)
    mt5fn.save_pretrained(params, cfg, tmp_path / "f32")
    _, low = mt5fn.load_pretrained(tmp_path / "f32", dtype=dtype, device="cpu")
    want = mt5fn.checkpoint.resolve_dtype(dtype)
    for path, tensor in mt5fn.flatten_params(low).items():  # float16 keeps wo in float32, as transformers does
        assert tensor.dtype == (torch.float32 if want == torch.float16 and path.endswith("mlp.wo") else want), path
    torch.testing.assert_close(low["shared"], params["shared"].to(want))
    mt5fn.save_pretrained(low, cfg, tmp_path / "low")
    assert json.loads((tmp_path / "low" / "config.json").read_text())["dtype"] == str(want).split(".")[-1]
    _, again = mt5fn.load_pretrained(tmp_path / "low")
    assert_trees_equal(again, low)


def test_shard_size_and_index(tmp_path):
    cfg = tiny("umt5")
    params = mt5fn.init_params(cfg)
    mt5fn.save_pretrained(params, cfg, tmp_path / "c", max_shard_size=2000)
    index = json.loads((tmp_path / "c" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and all(shard.endswith(f"-of-{len(shards):05d}.safetensors") for shard in shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in mt5fn.flatten_params(params).values())
    assert sorted(f for f in os.listdir(tmp_path / "c") if f.startswith("model-")) == shards
    for shard in shards:  # a tensor bigger than the limit gets a shard of its own, others stay below it
        from safetensors import safe_open

        with safe_open(tmp_path / "c" / shard, framework="pt") as handle:
            sizes = [handle.get_tensor(k).numel() * 4 for k in handle.keys()]
        assert len(sizes) == 1 or sum(sizes) <= 2000
    assert set(index["weight_map"]) == set(mt5fn.to_hf_state_dict(params, cfg)) - {
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}


def _snapshot(path) -> dict[str, bytes]:
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                out[os.path.relpath(full, path)] = handle.read()
    return out


def _failing_on(call: int, real):
    """``real``, except that call number ``call`` (1-based) raises."""
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise OSError(28, "No space left on device (injected)")
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize("where", ["second_shard", "tokenizer", "exchange"])
def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, where):
    import safetensors.torch

    cfg = tiny("mt5")
    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, target, max_shard_size=3000)
    (target / "README.md").write_text("my notes\n")
    before = _snapshot(target)
    new_params = mt5fn.init_params(cfg, seed=1)
    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_model())
    if where == "second_shard":
        monkeypatch.setattr(safetensors.torch, "save_file", _failing_on(2, safetensors.torch.save_file))
    elif where == "tokenizer":
        monkeypatch.setattr(mt5fn.Tokenizer, "save_pretrained", _failing_on(1, None))
    else:  # the one-step swap of the old and the new directory fails
        monkeypatch.setattr(mt5fn.checkpoint._atomic, "_exchange", _failing_on(1, None))
    with pytest.raises(OSError, match="injected"):
        mt5fn.save_pretrained(new_params, cfg, target, max_shard_size=3000, tokenizer=tokenizer)
    monkeypatch.undo()
    assert _snapshot(target) == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary or set-aside directories remain
    _, params = mt5fn.load_pretrained(target)
    assert_trees_equal(params, mt5fn.init_params(cfg, seed=0))


def test_save_over_a_checkpoint_replaces_weights_and_keeps_other_files(tmp_path):
    cfg = tiny("mt5")
    target = tmp_path / "ckpt"
    reference = hf_model(cfg, mt5fn.init_params(cfg, seed=0))
    save_bin(reference, target, sharded=True)
    (target / "README.md").write_text("notes\n")
    (target / "logs").mkdir()
    (target / "logs" / "run.txt").write_text("loss 1.0\n")
    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_model())
    tokenizer.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")  # stale: must not shadow the tokenizer saved below
    _, params = mt5fn.load_pretrained(target)
    mt5fn.save_pretrained(params, cfg, target, tokenizer=tokenizer)
    assert sorted(os.listdir(target)) == ["README.md", "config.json", "generation_config.json", "logs",
                                          "model.safetensors", "special_tokens_map.json", "spiece.model",
                                          "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((target / "tokenizer.json").read_text())["model"]["type"] == "Unigram"  # not the stale one
    assert (target / "logs" / "run.txt").read_text() == "loss 1.0\n"
    _, again = mt5fn.load_pretrained(target)
    assert_trees_equal(again, params)

    import transformers

    auto = transformers.AutoTokenizer.from_pretrained(target)
    assert auto("Hello <extra_id_0> world")["input_ids"] == tokenizer.encode("Hello <extra_id_0> world")
    # Saving without a tokenizer keeps the tokenizer files already there.
    mt5fn.save_pretrained(params, cfg, target)
    assert (target / "spiece.model").exists() and (target / "README.md").exists()


MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch, mt5fn
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    before = status("VmRSS:")
    cfg, params = mt5fn.load_pretrained(sys.argv[1])
    total = sum(float(t.float().sum()) if t.dim() < 2 else float(t.sum()) for t in mt5fn.flatten_params(params).values())
    nbytes = sum(t.numel() * t.element_size() for t in mt5fn.flatten_params(params).values())
    print(before, status("VmHWM:"), nbytes)
""")


def test_loading_is_memory_mapped(tmp_path):
    """Peak resident memory while loading (and touching every weight) stays under 1.5x the weights."""
    cfg = mt5fn.MT5Config(vocab_size=32000, d_model=1024, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                          tie_word_embeddings=False)
    params = mt5fn.init_params(cfg, seed=0)
    mt5fn.save_pretrained(params, cfg, tmp_path / "big")
    del params
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "big")], capture_output=True,
                         text=True, check=True, timeout=120)
    before, peak, nbytes = map(int, out.stdout.split())
    assert nbytes > 250e6
    assert peak - before < 1.5 * nbytes, (peak - before) / nbytes
