"""The benchmark's argument handling (``python -m benchmarks``): bad input is refused with a
message naming the argument, a missing transformers names the install command, and a tiny
end-to-end run prints both tables. No timing is asserted."""

from __future__ import annotations

import sys

import pytest

from benchmarks.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_case_lists_the_known_ones(capsys):
    code, _, err = run(capsys, "--cases", "forward,warp-speed")
    assert code == 2
    assert "'warp-speed'" in err and "scale-s2048" in err and "train" in err


@pytest.mark.parametrize("argv, needle", [
    (["--batch", "0"], "--batch must be a positive integer, got 0"),
    (["--threads", "-1"], "--threads must be a positive integer, got -1"),
    (["--repeats", "0"], "--repeats must be a positive integer, got 0"),
    (["--scale-lengths", "128,0"], "--scale-lengths entries must be a positive integer, got 0"),
    (["--device", "tpu"], "--device must be cpu or cuda, got 'tpu'"),
    (["--dtype", "float16"], "--dtype float16 needs --device cuda"),
    (["--dtype", "bfloat16", "--cases", "train-bf16"], "train-bf16 is bfloat16 autocast over float32 weights"),
    (["--long-length", "0"], "--long-length must be a positive integer, got 0"),
    (["--model", "mt5-gigantic"], "--model"),
    (["--cases", "scale-s50000000", "--scale-lengths", "50000000"], "choose smaller sizes"),
])
def test_bad_arguments_are_refused_with_a_clear_message(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert needle in err


def test_malformed_list_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--scale-batches", "1,eight"])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_missing_transformers_names_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes ``import transformers`` fail
    code, _, err = run(capsys, "--model", "tiny", "--cases", "forward", "--no-compile")
    assert code == 3
    assert 'pip install -e ".[bench]"' in err


def test_list_prints_every_case(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0
    for name in ("forward", "train", "train-bf16", "encoder", "train-long", "train-long-ckpt", "train-s2048",
                 "train-s2048-ckpt", "scale-s128", "scale-s512", "scale-s2048", "scale-b1", "scale-b8", "scale-b32"):
        assert name in out
    assert "1x4096->32" in out and "bf16-autocast" in out


def test_tiny_end_to_end_prints_every_table(capsys):
    code, out, _ = run(capsys, "--model", "tiny", "--cases", "forward,train,train-bf16,train-s64,train-s64-ckpt,scale-b1",
                       "--checkpoint-length", "64", "--func-grad", "--no-compile", "--repeats", "1", "--warmup", "0",
                       "--threads", "1")
    assert code == 0
    assert "Main cases" in out and "Long inputs" in out and "Scaling" in out
    assert "| forward | 8x128->32 |" in out and "| train |" in out and "| scale-b1 | 1x128->32 |" in out
    assert "| train-bf16 | 8x128->32 bf16-autocast |" in out and "| train-s64-ckpt | 1x64->32 ckpt |" in out
    assert "func.grad s" in out
    parity = float(out.split("parity max|logits diff| ")[1].split()[0])
    assert parity < 1e-4  # both implementations hold the same weights
