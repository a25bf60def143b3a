"""``mt5fn train`` end to end on tiny models: span and supervised data, checkpoints that
load, TensorBoard scalars, Ctrl-C, divergence, and bad input (clear message, non-zero
exit, the last good checkpoint untouched)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import mt5fn
from spm import spiece_dir
from train_fixtures import losses, run_cli, write_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(str(tmp_path_factory.mktemp("data")))


def _tree_digest(path: str) -> str:
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    return digest.hexdigest()


def test_span_corruption_from_scratch_trains_tokenizer_and_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli("train", "--data", data["text"], "--config", data["config"], "--out", out, "--steps", 4,
                        "--batch-size", 4, "--vocab-size", 150, "--max-input-length", 24, "--save-every", 2)
    assert code == 0, err
    assert (out / "tokenizer" / "spiece.model").is_file()  # trained on the data
    assert (out / "latest").read_text().strip() == "step-00000004"
    for step in (2, 4):
        cfg, params = mt5fn.load_pretrained(out / f"step-{step:08d}")
        assert cfg.model_type == "mt5"
        state = torch.load(out / f"step-{step:08d}" / "trainer_state.pt", weights_only=True)
        assert state["step"] == step and state["data"]["examples_seen"] == 4 * step
        assert set(state) >= {"optimizer", "scheduler", "rng", "settings"}
    tokenizer = mt5fn.Tokenizer.from_pretrained(out / "step-00000004")
    assert cfg.vocab_size == tokenizer.vocab_size  # from scratch: sized to the tokenizer
    assert len(losses(out)) == 4 and all(map(lambda v: v == v, losses(out)))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tensorboard"))
    assert "tok_s" in err  # the progress bar shows tokens/s


def test_supervised_fine_tuning_from_checkpoint(data, tmp_path):
    base = tmp_path / "base"
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", base, "--steps", 2, "--batch-size", 4)
    assert code == 0, err
    tuned = tmp_path / "tuned"
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--from-checkpoint",
                        base / "step-00000002", "--out", tuned, "--steps", 3, "--batch-size", 4,
                        "--grad-accum", 2, "--optimizer", "adafactor", "--lr", "1e-2", "--schedule", "cosine",
                        "--warmup", 1)
    assert code == 0, err
    start = mt5fn.flatten_params(mt5fn.load_pretrained(base / "step-00000002")[1])
    end = mt5fn.flatten_params(mt5fn.load_pretrained(tuned / "step-00000003")[1])
    assert start.keys() == end.keys() and any(not torch.equal(start[k], end[k]) for k in start)


def test_exploding_update_stops_before_the_first_save(data, tmp_path):
    out = tmp_path / "run"
    # AdamW moves every weight by ~lr in its first step: at lr 1e30 the weights are ~1e30 after step 1 --
    # finite, but no checkpoint of them is "good": the run stops before saving anything.
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", out, "--steps", 5, "--batch-size", 4,
                        "--lr", "1e30", "--max-grad-norm", 0, "--save-every", 1)
    assert code == 1, err
    assert "exploding update at step 1" in err and "--max-weight-growth" in err
    assert "none (no checkpoint was saved yet)" in err
    assert not (out / "latest").exists() and not (out / "step-00000001").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    # growth check off: step 1 is saved with weights ~1e30, whose next forward overflows
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", out, "--steps", 5, "--batch-size", 4,
                        "--lr", "1e30", "--max-grad-norm", 0, "--save-every", 1, "--max-weight-growth", 0)
    assert code == 1
    assert "non-finite" in err and "step-00000001" in err
    assert (out / "latest").read_text().strip() == "step-00000001"
    mt5fn.load_pretrained(out / "step-00000001")
    assert not (out / "step-00000002").exists()


def test_ctrl_c_saves_a_checkpoint_and_exits_130(data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mt5fn", "train", "--data", data["pairs"], "--mode", "supervised", "--config",
           data["config"], "--tokenizer", spiece_dir(), "--out", str(out), "--steps", "100000", "--batch-size", "4",
           "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    latest = (out / "latest").read_text().strip()
    state = torch.load(out / latest / "trainer_state.pt", weights_only=True)
    assert state["step"] == len(losses(out)) >= 1
    assert latest == f"step-{state['step']:08d}"


def _bad_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("empty", "is empty"),
    ("no_target", "bad.tsv:2: no TAB separating input and target (--strict)"),
    ("empty_target", "no usable record"),
    ("indivisible", "must be divisible"),
    ("batch_too_big", "larger than the"),
    ("too_short", "--max-input-length"),
    ("no_model", "exactly one of"),
])
def test_bad_input_gives_clear_error(data, tmp_path, case, message):
    sup = ["--mode", "supervised", "--tokenizer", spiece_dir()]
    args = {"data": data["pairs"], "extra": sup, "batch": 4}
    if case == "missing":
        args["data"] = str(tmp_path / "nope.tsv")
    elif case == "empty":
        args["data"] = _bad_lines(tmp_path / "empty.tsv", ["", "  "])
    elif case == "no_target":  # malformed records are fatal with --strict (skipped and counted without)
        args["data"] = _bad_lines(tmp_path / "bad.tsv", ["a\tb", "just an input"])
        args["extra"] = sup + ["--strict"]
    elif case == "empty_target":
        args["data"] = _bad_lines(tmp_path / "bad.tsv", ["a\t "])
    elif case == "indivisible":
        args["extra"] = sup + ["--grad-accum", "3"]
    elif case == "batch_too_big":
        args["batch"] = 1000
    elif case == "too_short":
        args["data"], args["extra"] = data["text"], ["--tokenizer", spiece_dir(), "--max-input-length", "1"]
    model = [] if case == "no_model" else ["--config", data["config"]]
    code, err = run_cli("train", "--data", args["data"], *model, "--out", tmp_path / "out", "--steps", 2,
                        "--batch-size", args["batch"], *args["extra"])
    assert code == 2, err
    assert message in err, err
    assert not (tmp_path / "out" / "latest").exists()


def test_existing_checkpoint_is_never_overwritten_without_resume(data, tmp_path):
    out = tmp_path / "run"
    common = ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer",
              spiece_dir(), "--out", out, "--batch-size", 4]
    assert run_cli("train", *common, "--steps", 1)[0] == 0
    before = _tree_digest(str(out / "step-00000001"))
    code, err = run_cli("train", *common, "--steps", 2)
    assert code == 2 and "--resume" in err
    code, err = run_cli("train", *common, "--steps", 2, "--resume", "--batch-size", 8)
    assert code == 2 and "batch_size" in err
    assert _tree_digest(str(out / "step-00000001")) == before
    assert (out / "latest").read_text().strip() == "step-00000001"
    code, err = run_cli("train", *[a if a != out else tmp_path / "fresh" for a in common], "--steps", 2, "--resume")
    assert code == 2 and "no checkpoint" in err


def test_malformed_lines_are_skipped_and_counted(data, tmp_path):
    lines = open(data["pairs"], encoding="utf-8").read().splitlines()
    bad = tmp_path / "mixed.tsv"
    bad.write_text("\n".join(lines[:20] + ["no tab here", "x\t  "] + lines[20:]) + "\n", encoding="utf-8")
    code, err = run_cli("train", "--data", bad, "--mode", "supervised", "--config", data["config"], "--tokenizer",
                        spiece_dir(), "--out", tmp_path / "out", "--steps", 1, "--batch-size", 4, "--quiet")
    assert code == 0, err
    assert "skipped 2 malformed record(s) of 66 (1 no TAB separating input and target, 1 empty target)" in err
    assert f"{bad}:21" in err and "64 examples from 64 records" in err


def test_jsonl_with_prefix_and_packing(data, tmp_path):
    import json

    lines = open(data["pairs"], encoding="utf-8").read().splitlines()
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"src": a, "tgt": b}, ensure_ascii=False) + "\n"
                             for a, b in (line.split("\t") for line in lines)), encoding="utf-8")
    code, err = run_cli("train", "--data", jsonl, "--mode", "supervised", "--input-field", "src", "--target-field",
                        "tgt", "--prefix", "translate: ", "--pack", "--max-input-length", 64, "--max-target-length", 16,
                        "--config", data["config"], "--tokenizer", spiece_dir(), "--out", tmp_path / "out",
                        "--steps", 2, "--batch-size", 4, "--quiet")
    assert code == 0, err
    packed = int(err.split("training data: ")[1].split(" examples")[0])
    assert 0 < packed < 64 and "from 64 records" in err  # whole examples joined into fewer, fuller rows
    assert len(losses(tmp_path / "out")) == 2
    code, err = run_cli("train", "--data", jsonl, "--mode", "span", "--prefix", "x", "--config", data["config"],
                        "--out", tmp_path / "bad", "--steps", 1, "--batch-size", 4)
    assert code == 2 and "--prefix applies to supervised inputs" in err
