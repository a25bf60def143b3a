"""``mt5fn generate``: tokenizes with the checkpoint's tokenizer, decodes, prints one output per line."""

from __future__ import annotations

import gzip
import io
import json
import os

import pytest
import torch

import mt5fn
import spm
from mt5fn.cli import main

TEXTS = ["Translate English to German: the house is wonderful.", "Привет, мир!", "我们今天去学校"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = mt5fn.MT5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
                          model_type="mt5", dropout_rate=0.0)
    params = mt5fn.init_params(cfg, seed=3)
    params["lm_head"][cfg.eos_token_id] *= 2.0  # some outputs end early
    path = tmp_path_factory.mktemp("ckpt") / "model"
    mt5fn.save_pretrained(params, cfg, path, tokenizer=tokenizer)
    return str(path), cfg, params, tokenizer


def _expected(checkpoint, texts, **kwargs):
    path, cfg, params, tokenizer = checkpoint
    batch = tokenizer.batch_encode(texts, padding=True)
    out = mt5fn.generate(params, cfg, batch["input_ids"], batch["attention_mask"], **kwargs)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.split("\n")[:-1]


def test_greedy_texts_on_the_command_line(checkpoint, capsys):
    assert main(["generate", "--model", checkpoint[0], "--max-new-tokens", "8", *TEXTS]) == 0
    lines = _lines(capsys)
    assert lines == _expected(checkpoint, TEXTS, max_new_tokens=8)
    assert len(lines) == len(TEXTS) and any(lines)


def test_reads_stdin_and_batches(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(text + "\n" for text in TEXTS)))
    assert main(["generate", "--model", checkpoint[0], "--max-new-tokens", "6", "--batch-size", "2"]) == 0
    expected = _expected(checkpoint, TEXTS[:2], max_new_tokens=6) + _expected(checkpoint, TEXTS[2:], max_new_tokens=6)
    assert _lines(capsys) == expected


def test_beam_search_returns_n_lines_per_input(checkpoint, capsys):
    args = ["--num-beams", "3", "--num-return-sequences", "2", "--length-penalty", "0.5", "--max-new-tokens", "7"]
    assert main(["generate", "--model", checkpoint[0], *args, *TEXTS[:2]]) == 0
    expected = _expected(checkpoint, TEXTS[:2], num_beams=3, num_return_sequences=2, length_penalty=0.5,
                         max_new_tokens=7)
    assert _lines(capsys) == expected and len(expected) == 4


def test_sampling_is_seeded(checkpoint, capsys):
    args = ["--sample", "--temperature", "0.8", "--top-k", "50", "--top-p", "0.9", "--max-new-tokens", "8"]
    outputs = []
    for seed in ("7", "7", "8"):
        assert main(["generate", "--model", checkpoint[0], *args, "--seed", seed, *TEXTS]) == 0
        outputs.append(_lines(capsys))
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0] == _expected(checkpoint, TEXTS, do_sample=True, temperature=0.8, top_k=50, top_p=0.9,
                                   max_new_tokens=8, generator=torch.Generator().manual_seed(7))


def test_profile_writes_a_trace_of_decoding_steps(checkpoint, capsys, tmp_path):
    trace_dir = tmp_path / "trace"
    assert main(["generate", "--model", checkpoint[0], "--max-new-tokens", "6", "--min-new-tokens", "6",
                 "--profile", str(trace_dir), TEXTS[0]]) == 0
    traces = [name for name in os.listdir(trace_dir) if ".pt.trace.json" in name]
    assert len(traces) == 1
    opener = gzip.open if traces[0].endswith(".gz") else open
    with opener(trace_dir / traces[0], "rt", encoding="utf-8") as handle:
        names = {event.get("name", "") for event in json.load(handle)["traceEvents"]}
    assert any("ProfilerStep#" in name for name in names) and any(n.startswith("aten::") for n in names)


@pytest.mark.parametrize("args, message", [
    (["--top-p", "1.5", "--sample"], "top_p must lie in (0, 1], got 1.5"),
    (["--max-new-tokens", "0"], "max_new_tokens must be an int >= 1, got 0"),
    (["--num-beams", "2", "--num-return-sequences", "3"], "num_return_sequences (3) must be <= num_beams (2)"),
    (["--sample", "--temperature", "0"], "temperature must be > 0 when sampling"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_bad_options_exit_1_with_a_message(checkpoint, capsys, args, message):
    assert main(["generate", "--model", checkpoint[0], *args, "hello"]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_missing_model_directory(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "hello"]) == 1
    assert "mt5fn generate: error:" in capsys.readouterr().err


def test_console_script_entry_point(checkpoint):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mt5fn", "generate", "--model", checkpoint[0],
                             "--max-new-tokens", "5"], input=TEXTS[1] + "\n", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == _expected(checkpoint, TEXTS[1:2], max_new_tokens=5)


# ------------------------------------------------------------------ --stream and --adapter
class _Writes(io.StringIO):
    """A stdout that remembers each write (streaming prints pieces before the line is complete)."""

    def __init__(self):
        super().__init__()
        self.pieces: list[str] = []

    def write(self, text):
        self.pieces.append(text)
        return super().write(text)


def test_stream_prints_the_generate_lines_piece_by_piece(checkpoint, monkeypatch):
    out = _Writes()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["generate", "--model", checkpoint[0], "--stream", "--max-new-tokens", "8", *TEXTS]) == 0
    lines = out.getvalue().split("\n")[:-1]
    assert lines == [_expected(checkpoint, [text], max_new_tokens=8)[0] for text in TEXTS]
    assert len([piece for piece in out.pieces if piece.strip()]) > len(TEXTS)  # text arrived in pieces


def test_stream_sampling_draws_input_after_input(checkpoint, capsys):
    args = ["--stream", "--sample", "--top-k", "20", "--seed", "5", "--max-new-tokens", "6"]
    assert main(["generate", "--model", checkpoint[0], *args, *TEXTS]) == 0
    generator = torch.Generator().manual_seed(5)  # one generator, continued from input to input
    expected = [_expected(checkpoint, [text], do_sample=True, top_k=20, max_new_tokens=6, generator=generator)[0]
                for text in TEXTS]
    assert _lines(capsys) == expected


@pytest.mark.parametrize("args, message", [
    (["--stream", "--num-beams", "3"], "--stream prints tokens as they are chosen, which beam search cannot"),
    (["--stream", "--sample", "--num-return-sequences", "2"], "--stream prints one output per input"),
])
def test_stream_refusals(checkpoint, capsys, args, message):
    assert main(["generate", "--model", checkpoint[0], *args, "hello"]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == "" and len(captured.err.splitlines()) == 1


def _adapter(checkpoint, folder):
    path, cfg, params, _ = checkpoint
    ad = mt5fn.lora.init(params, cfg, rank=2, alpha=4, targets=("q", "v", "wo"), seed=1)
    generator = torch.Generator().manual_seed(0)
    for block in ad["decoder"]["blocks"]:
        for sublayer in block.values():
            for factors in sublayer.values():
                factors["B"] = 2.0 * torch.randn(factors["B"].shape, generator=generator)
    mt5fn.lora.save_adapter(ad, cfg, folder)
    return mt5fn.lora.merge(params, ad, cfg)


def test_adapter_is_loaded_and_merged(checkpoint, capsys, tmp_path):
    merged = _adapter(checkpoint, tmp_path / "adapter")
    for extra in ([], ["--stream"]):
        assert main(["generate", "--model", checkpoint[0], "--adapter", str(tmp_path / "adapter"),
                     "--max-new-tokens", "8", *extra, *TEXTS]) == 0
        path, cfg, params, tokenizer = checkpoint
        expected = _expected((path, cfg, merged, tokenizer), TEXTS, max_new_tokens=8)
        assert _lines(capsys) == expected
    assert expected != _expected(checkpoint, TEXTS, max_new_tokens=8)  # the adapter changes the outputs


def test_bad_adapter_folders(checkpoint, capsys, tmp_path):
    assert main(["generate", "--model", checkpoint[0], "--adapter", str(tmp_path / "nope"), "hello"]) == 1
    assert "mt5fn generate: error:" in capsys.readouterr().err
    _adapter(checkpoint, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["use_dora"] = True
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    assert main(["generate", "--model", checkpoint[0], "--adapter", str(tmp_path / "adapter"), "hello"]) == 1
    captured = capsys.readouterr()
    assert "use_dora=True" in captured.err and len(captured.err.splitlines()) == 1 and captured.out == ""
