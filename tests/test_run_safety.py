"""Run safety in ``mt5fn train``: the ``--out`` lock (a second run exits 2; a stale lock of a dead
process is taken over with a warning), a torn ``metrics.jsonl`` line cut away on resume, the
finite-weights rule, ``--device`` / ``--seed`` / ``--out`` / ``--profile`` validation, and
``TrainConfig`` errors that name the field."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from mt5fn.training import RunLock, TrainConfig, TrainConfigError, TrainError
from mt5fn.training._safety import WeightGuard, tree_norm
from spm import spiece_dir
from train_fixtures import losses, run_cli, write_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(str(tmp_path_factory.mktemp("data")))


def _common(data, out):
    return ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer", spiece_dir(),
            "--out", out, "--batch-size", 4, "--quiet"]


def test_a_second_run_on_the_same_out_exits_2(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunLock(str(out))
    holder.acquire(print)  # another run holds the directory
    try:
        code, err = run_cli("train", *_common(data, out), "--steps", 1)
        assert code == 2
        assert "is in use by another mt5fn train run" in err and f"pid {__import__('os').getpid()}" in err
        assert socket.gethostname() in err and len(err.strip().splitlines()) == 1
        assert not (out / "latest").exists()
    finally:
        holder.release()
    assert run_cli("train", *_common(data, out), "--steps", 1)[0] == 0  # free again
    assert not (out / ".lock").exists()  # a clean exit removes the lock file


def test_a_stale_lock_of_a_dead_process_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (out / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))
    code, err = run_cli("train", *_common(data, out), "--steps", 1)
    assert code == 0, err
    assert f"taking over the stale lock {out / '.lock'} of pid {pid}" in err and "no longer running" in err
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "another-machine", "started": 0}))
    code, err = run_cli("train", *_common(data, out), "--steps", 2, "--resume")
    assert code == 2 and "locked by pid 1 on host another-machine" in err and "delete" in err


def test_a_torn_metrics_line_is_cut_away_on_resume(data, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", *_common(data, out), "--steps", 2)[0] == 0
    first = losses(out)
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "loss": 1.2')  # a crash in the middle of a write
    code, err = run_cli("train", *_common(data, out), "--steps", 4, "--resume")
    assert code == 0, err
    assert "dropped 1 torn line(s)" in err
    assert losses(out)[:2] == first and len(losses(out)) == 4
    assert all(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())


def test_weights_are_checked_before_any_save():
    huge = [torch.full((400, 32), 1e30)]
    assert tree_norm(huge) == pytest.approx(1e30 * (400 * 32) ** 0.5)  # finite although float32 squares overflow
    leaves = [torch.ones(3)]
    guard = WeightGuard(lambda: tree_norm(leaves), 2.0, lambda: "OUT/step-00000001")
    leaves[0] = torch.full((3,), 1.5)
    assert guard.check(1) == pytest.approx(1.5 * 3 ** 0.5)  # grew x1.5: fine
    leaves[0] = torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(TrainError, match="non-finite weights after the update of step 2.*OUT/step-00000001") as info:
        guard.check(2)
    assert info.value.code == 1
    leaves[0] = torch.full((3,), 4.0)
    with pytest.raises(TrainError, match=r"exploding update at step 3: .*x2\.67"):
        guard.check(3)
    WeightGuard(lambda: tree_norm(leaves), 0.0, lambda: None).check(4)  # 0 disables the growth check


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["--device", "cuda:x"], "--device must be 'cpu', 'cuda' or 'cuda:N'"),
    (["--seed", str(2 ** 64)], f"--seed must be an int in [0, {2 ** 63 - 1}], got {2 ** 64}"),
    (["--seed", "-1"], "--seed must be an int in [0,"),
    (["--lr", "nan"], "--lr must be a finite number > 0.0, got nan"),
    (["--max-weight-growth", "0.5"], "--max-weight-growth must be 0 (off) or a factor > 1"),
    (["--lora-targets", "q,zz"], "--lora-targets must be distinct names out of"),
    (["--steps", "0"], "--steps must be an int >= 1, got 0"),
])
def test_bad_options_name_the_flag(data, tmp_path, argv, message):
    code, err = run_cli("train", *_common(data, tmp_path / "out"), "--steps", 1, *argv)
    assert code == 2 and message in err, err
    assert err.startswith("mt5fn train: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a build without CUDA")
def test_cuda_without_cuda_is_a_clear_error(data, tmp_path):
    for device in ("cuda", "cuda:1"):
        code, err = run_cli("train", *_common(data, tmp_path / "out"), "--steps", 1, "--device", device)
        assert code == 2 and f"--device {device!r}: CUDA is not available here" in err and "--device cpu" in err


def test_out_or_profile_under_a_file(data, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    code, err = run_cli("train", *_common(data, blocker / "run"), "--steps", 1)
    assert code == 2 and f"is under the file {str(blocker)!r}" in err
    code, err = run_cli("train", *_common(data, blocker), "--steps", 1)
    assert code == 2 and "is a file; it must be a directory" in err
    code, err = run_cli("train", *_common(data, tmp_path / "run"), "--steps", 1, "--profile", blocker / "trace")
    assert code == 2 and "--profile" in err and "under the file" in err
    assert blocker.read_text() == "not a directory" and not (tmp_path / "run").exists()


def test_train_config_errors_name_the_field():
    base = dict(data=("a.txt",), out="run", steps=2, batch_size=4, preset="mt5-small")
    assert TrainConfig(**base).data == ("a.txt",)
    assert TrainConfig(**{**base, "data": ["a.txt", "b.txt"]}).data == ("a.txt", "b.txt")  # lists become tuples
    for changes, name in [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"dropout": 1.0}, "dropout"),
                          ({"mode": "mlm"}, "mode"), ({"seed": True}, "seed"), ({"data": ()}, "data"),
                          ({"preset": None}, "preset"), ({"eval_generate": True}, "eval_generate"),
                          ({"fsdp": True, "optimizer": "adafactor"}, "optimizer"),
                          ({"pack": True}, "pack"), ({"lora_alpha": 8.0}, "lora_alpha")]:
        with pytest.raises(TrainConfigError) as info:
            TrainConfig(**{**base, **changes})
        assert info.value.field == name and isinstance(info.value, ValueError)
        assert name in str(info.value)
    with pytest.raises(TrainConfigError, match="Adafactor fails on FSDP2's DTensor"):
        TrainConfig(**{**base, "fsdp": True, "optimizer": "adafactor"})
    with pytest.raises(TypeError, match="TrainConfig"):
        __import__("mt5fn").training.train({"steps": 1})
