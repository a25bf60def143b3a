"""``mt5fn train --lora RANK``: only the adapter trains (frozen weights get no gradient and no
optimizer state), checkpoints are PEFT adapter folders that peft loads onto transformers'
model, ``--resume`` continues bit for bit, and ``mt5fn evaluate --adapter`` reads them."""

from __future__ import annotations

import json
import os

import pytest
import torch

import mt5fn
from spm import spiece_dir
from train_fixtures import losses, run_cli, write_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    data = write_data(str(root / "data"))
    base = root / "base"
    cfg = mt5fn.MT5Config.from_hf(data["config"])
    tokenizer = mt5fn.Tokenizer.from_pretrained(spiece_dir())
    cfg = cfg.replace(vocab_size=tokenizer.vocab_size)
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=1), cfg, base, tokenizer=tokenizer)
    common = ["--data", data["pairs"], "--mode", "supervised", "--from-checkpoint", base, "--batch-size", 4,
              "--grad-accum", 2, "--lr", "1e-2", "--dropout", "0.1", "--lora", 4, "--lora-targets", "q,v,wo",
              "--quiet"]
    straight, split = root / "straight", root / "split"
    code, err = run_cli("train", *common, "--out", straight, "--steps", 6)
    assert code == 0, err
    assert "trainable parameters" in err
    assert run_cli("train", *common, "--out", split, "--steps", 3)[0] == 0
    code, err = run_cli("train", *common, "--out", split, "--steps", 6, "--resume")
    assert code == 0, err
    return {"base": base, "straight": straight, "split": split, "cfg": cfg, "data": data, "err": err}


def test_checkpoints_hold_the_adapter_alone_in_peft_format(runs):
    step = runs["straight"] / "step-00000006"
    names = set(os.listdir(step))
    assert {"adapter_config.json", "adapter_model.safetensors", "trainer_state.pt"} <= names
    assert not any(name.startswith("model") and name.endswith(".safetensors") for name in names)
    config = json.loads((step / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and sorted(config["target_modules"]) == ["q", "v", "wo"]
    state = torch.load(step / "trainer_state.pt", weights_only=True)
    cfg, base = runs["cfg"], mt5fn.load_pretrained(runs["base"])[1]
    adapters = mt5fn.lora.load_adapter(step, base, cfg)
    factors = [p for p in mt5fn.flatten_params(adapters) if mt5fn.lora.is_trainable(p)]
    assert len(state["optimizer"]["state"]) == len(factors)  # Adam moments for A and B only
    assert any(float(leaf.abs().max()) > 0 for p, leaf in mt5fn.flatten_params(adapters).items() if p.endswith(".B"))


def test_resume_is_bitwise(runs):
    assert losses(runs["split"]) == losses(runs["straight"]) and len(losses(runs["straight"])) == 6
    a = (runs["straight"] / "step-00000006" / "adapter_model.safetensors").read_bytes()
    b = (runs["split"] / "step-00000006" / "adapter_model.safetensors").read_bytes()
    assert a == b
    sa = torch.load(runs["straight"] / "step-00000006" / "trainer_state.pt", weights_only=True)
    sb = torch.load(runs["split"] / "step-00000006" / "trainer_state.pt", weights_only=True)
    for key, state in sa["optimizer"]["state"].items():
        assert all(torch.equal(v, sb["optimizer"]["state"][key][n]) for n, v in state.items()
                   if isinstance(v, torch.Tensor))


def test_peft_loads_the_trained_adapter(runs):
    import peft
    import transformers

    step = runs["straight"] / "step-00000006"
    cfg, base = mt5fn.load_pretrained(runs["base"])
    adapters = mt5fn.lora.load_adapter(step, base, cfg)
    hf = transformers.MT5ForConditionalGeneration.from_pretrained(runs["base"], attn_implementation="eager")
    model = peft.PeftModel.from_pretrained(hf, str(step)).eval()
    ids = torch.tensor([[5, 9, 22, 7, 1], [11, 4, 1, 0, 0]])
    mask = (ids != 0).long()
    decoder = torch.tensor([[0, 6, 8], [0, 3, 12]])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
        ours = mt5fn.forward(mt5fn.lora.apply(base, adapters, cfg), cfg, ids, decoder, mask)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_base_weights_never_change_and_evaluate_reads_the_adapter(runs, tmp_path, capsys):
    before = mt5fn.flatten_params(mt5fn.load_pretrained(runs["base"])[1])
    code, err = run_cli("evaluate", "--model", runs["base"], "--adapter", runs["straight"] / "latest",
                        "--data", runs["data"]["pairs"], "--no-generate")
    out = capsys.readouterr().out
    assert code == 0, err
    adapted = json.loads(out)["eval_loss"]
    code, _ = run_cli("evaluate", "--model", runs["base"], "--data", runs["data"]["pairs"], "--no-generate")
    plain = json.loads(capsys.readouterr().out)["eval_loss"]
    assert adapted < plain  # the adapter learned something the base model does not know
    after = mt5fn.flatten_params(mt5fn.load_pretrained(runs["base"])[1])
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lora_needs_a_pretrained_model(runs, tmp_path):
    data = runs["data"]
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", tmp_path / "out", "--steps", 1, "--batch-size", 4,
                        "--lora", 4)
    assert code == 2 and "--lora fine-tunes a pretrained model" in err
