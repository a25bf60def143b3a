"""``mt5fn.lora`` against huggingface/peft, both ways, on tiny t5 / mt5 / umt5 models (float32).

Logits agree to float32 round-off (1e-5 of their magnitude).

* mt5fn -> peft: adapters made (and moved off zero) in mt5fn, written with
  ``save_adapter``, loaded by ``peft.PeftModel.from_pretrained`` onto
  transformers' model: the same logits as ``forward(lora.apply(...))``.
* peft -> mt5fn: a LoRA model trained a few steps with peft, saved with its
  ``save_pretrained``, read with ``load_adapter``: the same logits as peft's.
* Round trips, the file layout, PEFT's target matching (names, suffixes, a
  regular expression, ``exclude_modules``, rsLoRA), and the refusals: options
  mt5fn does not implement and adapters that do not fit the model are a
  ``ValueError`` naming them, and nothing is returned half-loaded.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import mt5fn
from reference import hf_model

import peft  # noqa: E402 -- the test extra installs it: a missing one must fail, not skip



def _close(ours, theirs):
    """Equal to float32 round-off: within 1e-5 of the logits' magnitude. mt5fn merges the weight
    (x (W + s B A)^T), peft adds the branch (x W^T + s (x A^T) B^T); the two round differently."""
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * scale)


def _model(model_type: str, seed: int = 0):
    cfg = mt5fn.MT5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=2,
                          num_heads=3, model_type=model_type,
                          feed_forward_proj="relu" if model_type == "t5" else "gated-gelu",
                          tie_word_embeddings=model_type == "t5", dropout_rate=0.0)
    return cfg, mt5fn.init_params(cfg, seed=seed)


def _batch(cfg, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, cfg.vocab_size, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    labels = torch.randint(2, cfg.vocab_size, (3, 5), generator=generator)
    labels[2, 3:] = -100
    return ids, mask, labels


def _trained_like(ad: dict, seed: int) -> dict:
    """Adapters with B away from zero (as after training), so the comparison is not trivial."""
    generator = torch.Generator().manual_seed(seed)
    flat = mt5fn.flatten_params(ad)
    for path, leaf in flat.items():
        if path.endswith(".B"):
            flat[path] = 0.3 * torch.randn(leaf.shape, generator=generator)
    tree = mt5fn.unflatten_params(flat)
    for stack in ("encoder", "decoder"):  # blocks without adapters are empty dicts, which flattening drops
        if stack in ad:
            tree[stack]["blocks"] = [tree[stack]["blocks"][i] if i < len(tree[stack]["blocks"]) and
                                     tree[stack]["blocks"][i] is not None else {} for i in range(len(ad[stack]["blocks"]))]
    return tree


def _ours(params, cfg, ad, ids, mask, labels):
    return mt5fn.forward(mt5fn.lora.apply(params, ad, cfg), cfg, ids, mt5fn.shift_right(labels, cfg), mask)


def _theirs(model, cfg, ids, mask, labels):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=mt5fn.shift_right(labels, cfg)).logits


@pytest.mark.parametrize("model_type", ["t5", "mt5", "umt5"])
@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v", "o", "wi", "wo")], ids=["qv", "all"])
def test_peft_loads_an_mt5fn_adapter(tmp_path, model_type, targets):
    cfg, params = _model(model_type)
    ad = _trained_like(mt5fn.lora.init(params, cfg, rank=3, alpha=6, targets=targets, seed=1), seed=2)
    mt5fn.lora.save_adapter(ad, cfg, tmp_path / "adapter")
    model = peft.PeftModel.from_pretrained(hf_model(cfg, params), str(tmp_path / "adapter")).eval()
    ids, mask, labels = _batch(cfg)
    expected = _theirs(model, cfg, ids, mask, labels)
    _close(_ours(params, cfg, ad, ids, mask, labels), expected)
    base = _theirs(hf_model(cfg, params), cfg, ids, mask, labels)
    assert (expected - base).abs().max() > 1e-2  # the adapter does change the model


def _peft_trained(cfg, params, lora_config, steps: int = 4):
    """A peft LoRA model trained ``steps`` AdamW steps on a random batch, back in eval mode."""
    torch.manual_seed(0)
    model = peft.get_peft_model(hf_model(cfg, params), lora_config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    ids, mask, labels = _batch(cfg, seed=5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("model_type, options", [
    ("t5", dict(target_modules=["q", "v"], lora_dropout=0.1)),
    ("mt5", dict(target_modules=["q", "k", "v", "o", "wi_0", "wi_1", "wo"], lora_dropout=0.05)),
    ("umt5", dict(target_modules=["o", "wo"])),
    ("mt5", dict(target_modules=r".*decoder\.block\.\d+\.layer\.1\.EncDecAttention\.(q|v)")),
    ("mt5", dict(target_modules=["q", "v"], exclude_modules=["decoder.block.1.layer.0.SelfAttention.q"])),
    ("t5", dict(target_modules=["q", "wi"], use_rslora=True)),
], ids=["t5-qv-dropout", "mt5-all", "umt5-o-wo", "mt5-regex-cross", "mt5-exclude", "t5-rslora"])
def test_mt5fn_loads_a_peft_trained_adapter(tmp_path, model_type, options):
    cfg, params = _model(model_type, seed=3)
    config = peft.LoraConfig(r=4, lora_alpha=8, **options)
    model = _peft_trained(cfg, params, config)
    model.save_pretrained(str(tmp_path / "peft"))
    ad = mt5fn.lora.load_adapter(tmp_path / "peft", params, cfg)
    assert all(leaf.abs().max() > 1e-3 for path, leaf in mt5fn.flatten_params(ad).items() if path.endswith(".B"))
    ids, mask, labels = _batch(cfg, seed=1)
    _close(_ours(params, cfg, ad, ids, mask, labels), _theirs(model, cfg, ids, mask, labels))
    assert float(ad["dropout"]) == pytest.approx(options.get("lora_dropout", 0.0))

    # ... and writing it back gives a folder peft reads to the same model again.
    mt5fn.lora.save_adapter(ad, cfg, tmp_path / "again")
    again = peft.PeftModel.from_pretrained(hf_model(cfg, params), str(tmp_path / "again")).eval()
    _close(_theirs(again, cfg, ids, mask, labels), _theirs(model, cfg, ids, mask, labels))


def test_site_names_are_transformers_module_names():
    for model_type in ("t5", "mt5", "umt5"):
        cfg, params = _model(model_type)
        state = mt5fn.to_hf_state_dict(params, cfg)
        flat = mt5fn.flatten_params(params)
        for site in mt5fn.lora.sites(cfg):
            assert state[f"{site.hf_name}.weight"] is flat[site.dotted], site
            assert tuple(flat[site.dotted].shape) == site.shape


def test_peft_names_the_same_modules():
    """PEFT's ``target_modules=["q", "v"]`` on transformers' T5 selects exactly mt5fn's q and v sites."""
    cfg, params = _model("mt5")
    model = peft.get_peft_model(hf_model(cfg, params), peft.LoraConfig(r=2, target_modules=["q", "v", "wi_1"]))
    keys = set(peft.get_peft_model_state_dict(model))
    ad = mt5fn.lora.init(params, cfg, rank=2, alpha=8, targets=("q", "v", "wi_1"))
    expected = {f"base_model.model.{site.hf_name}.lora_{f}.weight" for site, _, _ in mt5fn.lora.adapter_sites(ad, cfg)
                for f in "AB"}
    assert keys == expected


def test_round_trip_and_file_layout(tmp_path):
    cfg, params = _model("mt5")
    ad = _trained_like(mt5fn.lora.init(params, cfg, rank=2, alpha=0.1, targets=("k", "wi"), dropout=0.2), seed=0)
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "README.md").write_text("notes\n")
    mt5fn.lora.save_adapter(ad, cfg, folder)
    assert sorted(os.listdir(folder)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (2, 0.1, 0.2)
    assert config["target_modules"] == ["k", "wi_0", "wi_1"] and config["peft_type"] == "LORA"
    back = mt5fn.lora.load_adapter(folder, params, cfg)
    flat, flat_back = mt5fn.flatten_params(ad), mt5fn.flatten_params(back)
    assert flat.keys() == flat_back.keys()
    for path in flat:
        assert torch.equal(flat[path], flat_back[path]), path


def test_a_subset_of_sites_is_written_as_full_module_names(tmp_path):
    cfg, params = _model("t5")
    ad = _trained_like(mt5fn.lora.init(params, cfg, rank=2, alpha=4, targets=("q",)), seed=0)
    ad["decoder"]["blocks"][1] = {}  # drop the last decoder block's adapters
    mt5fn.lora.save_adapter(ad, cfg, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert "decoder.block.0.layer.1.EncDecAttention.q" in config["target_modules"]
    assert not any(name.startswith("decoder.block.1") for name in config["target_modules"])
    model = peft.PeftModel.from_pretrained(hf_model(cfg, params), str(tmp_path / "a")).eval()
    ids, mask, labels = _batch(cfg)
    _close(_ours(params, cfg, ad, ids, mask, labels), _theirs(model, cfg, ids, mask, labels))


def test_a_failed_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    cfg, params = _model("mt5")
    first = mt5fn.lora.init(params, cfg, rank=2, alpha=4)
    mt5fn.lora.save_adapter(first, cfg, tmp_path / "a")
    before = {name: (tmp_path / "a" / name).read_bytes() for name in os.listdir(tmp_path / "a")}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mt5fn.lora._peft.json.dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        mt5fn.lora.save_adapter(_trained_like(first, 1), cfg, tmp_path / "a")
    assert {name: (tmp_path / "a" / name).read_bytes() for name in os.listdir(tmp_path / "a")} == before


# ------------------------------------------------------------------ refusals
def _peft_folder(tmp_path, cfg, params, **changes) -> str:
    """A peft-written folder whose adapter_config.json is then edited with ``changes``."""
    model = peft.get_peft_model(hf_model(cfg, params), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v"]))
    folder = str(tmp_path / "peft")
    model.save_pretrained(folder)
    file = os.path.join(folder, "adapter_config.json")
    with open(file, encoding="utf-8") as handle:
        config = json.load(handle)
    config.update(changes)
    with open(file, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    return folder


@pytest.mark.parametrize("changes, names", [
    (dict(use_dora=True), ["use_dora=True"]),
    (dict(bias="lora_only"), ["bias='lora_only'"]),
    (dict(modules_to_save=["lm_head"]), ["modules_to_save=['lm_head']"]),
    (dict(rank_pattern={"q": 4}), ["rank_pattern={'q': 4}"]),
    (dict(alpha_pattern={"v": 2}, use_dora=True), ["use_dora=True", "alpha_pattern={'v': 2}"]),
    (dict(layers_to_transform=[0]), ["layers_to_transform=[0]"]),
    (dict(init_lora_weights="pissa"), ["init_lora_weights='pissa'"]),
    (dict(peft_type="IA3"), ["peft_type is 'IA3'"]),
    (dict(r=3), ["the factors have rank 2 but adapter_config.json says r = 3"]),
    (dict(target_modules=["q", "v", "lm_head"]), ["selects ['lm_head']"]),
    (dict(target_modules=["q"]), ["not LoRA factors", "SelfAttention.v.lora_A.weight"]),
    (dict(target_modules=["q", "v", "k"]), ["lora_A / lora_B weights are missing", "SelfAttention.k"]),
    (dict(target_modules=["nothing"]), ["selects no module"]),
])
def test_unsupported_or_mismatched_peft_configs_are_refused(tmp_path, changes, names):
    cfg, params = _model("mt5")
    folder = _peft_folder(tmp_path, cfg, params, **changes)
    with pytest.raises(ValueError) as error:
        mt5fn.lora.load_adapter(folder, params, cfg)
    for name in names:
        assert name in str(error.value)


def test_an_adapter_for_another_model_is_refused(tmp_path):
    cfg, params = _model("mt5")
    other = cfg.replace(d_model=20)
    ad = mt5fn.lora.init(mt5fn.init_params(other), other, rank=2, alpha=4)
    mt5fn.lora.save_adapter(ad, other, tmp_path / "a")
    with pytest.raises(ValueError, match=r"encoder\.blocks\.0\.attn\.q\.A has shape \(2, 20\).*needs \(r, 16\)"):
        mt5fn.lora.load_adapter(tmp_path / "a", params, cfg)
    deeper = cfg.replace(num_decoder_layers=3)
    mt5fn.lora.save_adapter(mt5fn.lora.init(mt5fn.init_params(deeper), deeper, rank=2, alpha=4), deeper,
                            tmp_path / "b")
    with pytest.raises(ValueError, match=r"decoder\.block\.2\.layer\.0\.SelfAttention\.q"):
        mt5fn.lora.load_adapter(tmp_path / "b", params, cfg)


def test_missing_or_broken_folders(tmp_path):
    cfg, params = _model("mt5")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        mt5fn.lora.load_adapter(tmp_path / "nope", params, cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json: missing; not a PEFT adapter folder"):
        mt5fn.lora.load_adapter(tmp_path / "empty", params, cfg)
    folder = _peft_folder(tmp_path, cfg, params)
    os.remove(os.path.join(folder, "adapter_model.safetensors"))
    with pytest.raises(FileNotFoundError, match="has neither adapter_model.safetensors nor adapter_model.bin"):
        mt5fn.lora.load_adapter(folder, params, cfg)
