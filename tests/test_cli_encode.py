"""``mt5fn encode``: embeddings equal to transformers' T5EncoderModel with padding zeroed.

Texts from the command line or stdin, batched by length in any batch size,
``--max-length`` padding/cutting, single weights files with ``--tokenizer``,
and one-line errors that write nothing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import mt5fn
import spm
from mt5fn.cli import main
from test_checkpoint import tiny
from test_encoder_only import encoder_tree, hf_encoder

TEXTS = ["Hello world", "x", "Привет, мир! <extra_id_3> 中文 and a somewhat longer sentence here.", "",
         "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tok = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = tiny("t5-v1_1", vocab_size=len(tok))
    params = mt5fn.init_params(cfg, seed=8)
    path = tmp_path_factory.mktemp("enc") / "model"
    mt5fn.save_pretrained(params, cfg, path, tokenizer=tok)
    return path, cfg, params, tok


def expected(cfg, params, tok, texts, max_length=None):
    """transformers' T5EncoderModel on the same ids, padded positions zeroed."""
    enc = tok.batch_encode(texts, padding="max_length" if max_length else True, max_length=max_length,
                           truncation=max_length is not None)
    reference = hf_encoder("T5EncoderModel", cfg, params)
    with torch.no_grad():
        hidden = reference(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    return hidden * enc["attention_mask"][..., None], enc


def check(out, cfg, params, tok, texts, max_length=None):
    result = load_file(out)
    assert sorted(result) == ["attention_mask", "embeddings", "input_ids"]
    want, enc = expected(cfg, params, tok, texts, max_length)
    assert result["embeddings"].shape == (len(texts), enc["input_ids"].shape[1], cfg.d_model)
    torch.testing.assert_close(result["embeddings"], want, atol=1e-5, rtol=0)
    assert torch.equal(result["attention_mask"], enc["attention_mask"])
    assert torch.equal(result["input_ids"], enc["input_ids"])
    assert (result["embeddings"][result["attention_mask"] == 0] == 0).all()


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_encode_equals_transformers_with_padding_zeroed(model, tmp_path, capsys, batch_size):
    path, cfg, params, tok = model
    out = tmp_path / "emb.safetensors"
    assert main(["encode", "--model", str(path), "--out", str(out), "--batch-size", str(batch_size), *TEXTS]) == 0
    assert "wrote" in capsys.readouterr().out
    check(out, cfg, params, tok, TEXTS)


def test_max_length_pads_and_cuts(model, tmp_path, capsys):
    path, cfg, params, tok = model
    out = tmp_path / "emb.safetensors"
    assert main(["encode", "--model", str(path), "--out", str(out), "--max-length", "6", *TEXTS]) == 0
    check(out, cfg, params, tok, TEXTS, max_length=6)
    ids = load_file(out)["input_ids"]
    assert ids.shape == (len(TEXTS), 6) and ids[2, -1] == tok.eos_token_id  # cut, keeping </s>


def test_stdin_and_a_single_file_model(model, tmp_path):
    path, cfg, params, tok = model
    from safetensors.torch import save_file

    state = mt5fn.to_hf_state_dict(encoder_tree(params), cfg)
    save_file({k: v.contiguous() for k, v in state.items() if k != "encoder.embed_tokens.weight"},
              str(tmp_path / "t5_encoder.safetensors"))
    (tmp_path / "config.json").write_text(__import__("json").dumps(cfg.to_hf()))
    out = tmp_path / "emb.safetensors"
    result = subprocess.run([sys.executable, "-m", "mt5fn", "encode", "--model",
                             str(tmp_path / "t5_encoder.safetensors"), "--tokenizer", str(path),
                             "--config", str(tmp_path / "config.json"), "--out", str(out), "--batch-size", "2"],
                            input="\n".join(TEXTS) + "\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    check(out, cfg, params, tok, TEXTS)


@pytest.mark.parametrize("case, fragment", [
    ("batch_size", "--batch-size must be >= 1"),
    ("max_length", "--max-length must be >= 1"),
    ("out_dir_missing", "does not exist"),
    ("out_is_dir", "is a directory"),
    ("single_file_without_tokenizer", "pass --tokenizer"),
    ("no_texts", "no texts"),
    ("bad_utf8", "stdin: line 2 is not UTF-8"),
    ("no_model", "no such checkpoint"),
])
def test_errors_are_one_line_and_write_nothing(model, tmp_path, capsys, monkeypatch, case, fragment):
    path = model[0]
    out = tmp_path / "emb.safetensors"
    args = ["encode", "--model", str(path), "--out", str(out)]
    stdin = b""
    if case == "batch_size":
        args += ["--batch-size", "0", "x"]
    elif case == "max_length":
        args += ["--max-length", "0", "x"]
    elif case == "out_dir_missing":
        args[4] = str(tmp_path / "nope" / "emb.safetensors")
        args.append("x")
    elif case == "out_is_dir":
        args[4] = str(tmp_path)
        args.append("x")
    elif case == "single_file_without_tokenizer":
        args[2] = str(path / "model.safetensors")
        args.append("x")
    elif case == "bad_utf8":
        stdin = b"fine\n\xff\xfe broken\n"
    elif case == "no_model":
        args[2] = str(tmp_path / "absent")
        args.append("x")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="surrogateescape"))
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("mt5fn encode: error:") and fragment in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == []
