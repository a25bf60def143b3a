"""``mt5fn generate --quantize int8`` and ``--dtype bfloat16``: the CLI decodes with the same low-precision
weights as the Python API (``load_pretrained(..., quantize="int8")`` / ``dtype=torch.bfloat16``)."""

from __future__ import annotations

import pytest
import torch

import mt5fn
import spm
from mt5fn.cli import main

TEXTS = ["Translate English to German: the house is wonderful.", "Привет, мир!", "我们今天去学校"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = mt5fn.MT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=2,
                          model_type="mt5", dropout_rate=0.0)
    params = mt5fn.init_params(cfg, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    mt5fn.save_pretrained(params, cfg, path, tokenizer=tokenizer)
    return str(path), tokenizer


@pytest.mark.parametrize("flags, load", [
    (["--quantize", "int8"], dict(quantize="int8")),
    (["--dtype", "bfloat16"], dict(dtype=torch.bfloat16)),
    (["--dtype", "bfloat16", "--quantize", "int8"], dict(dtype=torch.bfloat16, quantize="int8")),
])
def test_low_precision_flags_decode_like_the_api(checkpoint, capsys, flags, load):
    path, tokenizer = checkpoint
    cfg, params = mt5fn.load_pretrained(path, **load)
    batch = tokenizer.batch_encode(TEXTS, padding=True)
    out = mt5fn.generate(params, cfg, batch["input_ids"], batch["attention_mask"], max_new_tokens=8, num_beams=2)
    expected = tokenizer.batch_decode(out, skip_special_tokens=True)
    assert main(["generate", "--model", path, "--max-new-tokens", "8", "--num-beams", "2", *flags, *TEXTS]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == expected


def test_unknown_quantize_scheme_is_a_usage_error(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", checkpoint[0], "--quantize", "int4", "hi"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
