"""``mt5fn info`` and ``mt5fn convert`` on checkpoints written by transformers and by mt5fn."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import mt5fn
import spm
from mt5fn.cli import main
from reference import hf_model
from test_checkpoint import assert_trees_equal, hf_load, hf_logits, save_bin, tiny


def test_info_reports_config_counts_dtype_and_tying(tmp_path, capsys):
    cfg = tiny("mt5")
    params = mt5fn.init_params(cfg)
    mt5fn.save_pretrained(params, cfg, tmp_path / "m", tokenizer=mt5fn.Tokenizer.from_pretrained(spm.spiece_dir()))
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    d, V = cfg.d_model, cfg.vocab_size
    assert "model_type: mt5" in out and "num_decoder_layers: 3" in out and "weights: safetensors" in out
    assert "embedding (shared)" in out and f"{V * d:,}" in out
    assert f"{mt5fn.num_params(params['encoder']):,}" in out and f"{mt5fn.num_params(params['decoder']):,}" in out
    assert f"{mt5fn.num_params(params):,}" in out
    assert "dtype: float32" in out and "head: untied" in out
    assert "tokenizer: tokenizer.json, vocab_size 400 (100 extra ids)" in out

    tied = tiny("t5")
    mt5fn.save_pretrained(mt5fn.init_params(tied, dtype=torch.bfloat16), tied, tmp_path / "t", max_shard_size=2000)
    assert main(["info", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "head: tied to the embedding" in out and "dtype: bfloat16" in out and "tokenizer: none" in out
    assert "sharded via model.safetensors.index.json" in out


def test_convert_bin_to_safetensors_with_dtype_and_tokenizer(tmp_path, capsys):
    cfg = tiny("umt5")
    reference = hf_model(cfg, mt5fn.init_params(cfg, seed=5))
    save_bin(reference, tmp_path / "src", sharded=True)
    mt5fn.Tokenizer.from_pretrained(spm.spiece_dir()).save_pretrained(tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst"), "--max-shard-size", "3KB"]) == 0
    files = sorted(os.listdir(tmp_path / "dst"))
    assert "model.safetensors.index.json" in files and not any(f.endswith(".bin") for f in files)
    for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "dst" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    model, info = hf_load(tmp_path / "dst")
    assert not any(info.values())
    torch.testing.assert_close(hf_logits(model, cfg), hf_logits(reference, cfg), atol=1e-5, rtol=0)

    assert main(["convert", str(tmp_path / "dst"), str(tmp_path / "half"), "--dtype", "bfloat16"]) == 0
    _, half = mt5fn.load_pretrained(tmp_path / "half")
    _, full = mt5fn.load_pretrained(tmp_path / "dst")
    assert_trees_equal(half, mt5fn.tree_map(lambda t: t.to(torch.bfloat16), full))
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_config", "corrupt", "dst_is_file", "bad_shard_size", "src_is_file"])
def test_convert_errors_name_the_file_and_write_nothing(tmp_path, capsys, case):
    cfg = tiny("mt5")
    src, dst = tmp_path / "src", tmp_path / "dst"
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, src)
    args = ["convert", str(src), str(dst)]
    expected = {"missing_config": "config.json", "corrupt": "model.safetensors", "dst_is_file": "is a file",
                "bad_shard_size": "max_shard_size", "src_is_file": "config.json: not a weights file"}[case]
    if case == "missing_config":
        os.remove(src / "config.json")
    elif case == "corrupt":
        (src / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:100])
    elif case == "dst_is_file":
        dst.write_text("precious")
    elif case == "bad_shard_size":
        args += ["--max-shard-size", "lots"]
    else:
        args[1] = str(src / "config.json")
    before = sorted(os.listdir(tmp_path))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("mt5fn convert: error:") and expected in err
    assert sorted(os.listdir(tmp_path)) == before
    if case == "dst_is_file":
        assert dst.read_text() == "precious"


def test_info_errors_and_console_entry_point(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "mt5fn", "info", str(tmp_path / "empty")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert "mt5fn info: error:" in result.stderr and str(tmp_path / "empty" / "config.json") in result.stderr
