"""``mt5fn demo`` runs end to end (a short run: the 90% accuracy target of the full run is
checked by hand, see docs/training.md): it prints the accuracy and greedy / beam outputs, saves a
checkpoint transformers loads with the same logits, and writes the loss-curve PNG."""

from __future__ import annotations

import json

import torch

import mt5fn
from mt5fn.demo._numbers import LANGUAGES, spell
from mt5fn.demo._task import make_pairs
from train_fixtures import run_cli


def test_demo_task_is_honest_and_fixed_width():
    train, test = make_pairs(seed=3)
    assert len(train) == 3600 and len(test) == 400
    assert not set(train) & set(test)  # a held-out (input, target) pair is never trained on
    assert {source.split(":")[0] for source, _ in test} == set(LANGUAGES)
    assert all(len(answer) == 3 and answer.isdigit() for _, answer in train + test)
    assert ("fr: quatre-vingt-dix-sept", "097") in train + test and ("en: zero", "000") in train + test
    assert make_pairs(seed=3) == (train, test) and make_pairs(seed=4) != (train, test)


def test_demo_short_run_artifacts(tmp_path, capsys):
    out = tmp_path / "demo"
    code, err = run_cli("demo", "--steps", 30, "--seed", 1, "--out", out)
    printed = capsys.readouterr().out
    assert code == 0, err + printed
    assert "held-out exact-match accuracy:" in printed and "beam search" in printed
    assert "(expected" in printed  # example generations are shown
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "demo.json").read_text())
    assert summary["status"] == "done" and summary["total"] == 400 and summary["steps"] == 30
    assert set(summary["per_language"]) == set(LANGUAGES) and summary["cpu_seconds"] > 0

    import transformers

    model_dir = out / "model"
    reference = transformers.MT5ForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    cfg, params = mt5fn.load_pretrained(model_dir)
    batch = hf_tokenizer([f"de: {spell(342, 'de')}", f"es: {spell(17, 'es')}"], return_tensors="pt", padding=True)
    decoder_input_ids = torch.tensor([[0, 5, 6], [0, 7, 8]])
    with torch.no_grad():
        expected = reference(**batch, decoder_input_ids=decoder_input_ids).logits
    ours = mt5fn.forward(params, cfg, batch["input_ids"], decoder_input_ids, batch["attention_mask"])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)

    # Running again into the same --out replaces the earlier demo's files; other directories are refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, err = run_cli("demo", "--steps", 1, "--out", tmp_path / "mine")
    assert code == 1 and "demo.json missing" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
