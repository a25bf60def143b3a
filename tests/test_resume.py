"""Exact resume: 6 steps straight == 3 steps + ``--resume`` 3 steps, bit for bit (losses and
weights), with span corruption, dropout and gradient accumulation; damaged checkpoints are
refused with a clear message and left untouched."""

from __future__ import annotations

import os

import pytest
import torch

import mt5fn
from spm import spiece_dir
from train_fixtures import losses, run_cli, write_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = write_data(str(root / "data"))
    common = ["--data", data["text"], "--config", data["config"], "--tokenizer", spiece_dir(),
              "--batch-size", 4, "--grad-accum", 2, "--max-input-length", 24, "--dropout", "0.1",
              "--schedule", "inverse_sqrt", "--warmup", 2, "--seed", 3]
    straight, split = root / "straight", root / "split"
    assert run_cli("train", *common, "--out", straight, "--steps", 6)[0] == 0
    assert run_cli("train", *common, "--out", split, "--steps", 3)[0] == 0
    code, err = run_cli("train", *common, "--out", split, "--steps", 6, "--resume")
    assert code == 0, err
    assert "resuming from" in err
    return {"straight": straight, "split": split, "common": common}


def test_resumed_losses_are_bitwise_identical(runs):
    assert len(losses(runs["straight"])) == 6
    assert losses(runs["split"]) == losses(runs["straight"])


def test_resumed_weights_and_optimizer_are_bitwise_identical(runs):
    a = mt5fn.flatten_params(mt5fn.load_pretrained(runs["straight"] / "step-00000006")[1])
    b = mt5fn.flatten_params(mt5fn.load_pretrained(runs["split"] / "step-00000006")[1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(runs["straight"] / "step-00000006" / "trainer_state.pt", weights_only=True)
    sb = torch.load(runs["split"] / "step-00000006" / "trainer_state.pt", weights_only=True)
    for key, state in sa["optimizer"]["state"].items():
        assert all(torch.equal(state[name], sb["optimizer"]["state"][key][name]) for name in state
                   if isinstance(state[name], torch.Tensor))
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["data"] == sb["data"]
    assert sa["data"]["examples_seen"] == 24 and sa["data"]["seed"] == 3


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, message", [
    ("truncate_state", "corrupt"),
    ("remove_weights", "missing model.safetensors"),
    ("remove_state", "missing trainer_state.pt"),
    ("bad_pointer", "corrupt"),
    ("dangling_pointer", "is missing"),
])
def test_damaged_checkpoint_is_refused_and_untouched(runs, tmp_path, damage, message):
    out = _copy(runs["split"], tmp_path / "run")
    step = out / "step-00000006"
    if damage == "truncate_state":
        data = (step / "trainer_state.pt").read_bytes()
        (step / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "remove_weights":
        os.remove(step / "model.safetensors")
    elif damage == "remove_state":
        os.remove(step / "trainer_state.pt")
    elif damage == "bad_pointer":
        (out / "latest").write_text("../elsewhere\n")
    elif damage == "dangling_pointer":
        (out / "latest").write_text("step-00000099\n")
    before = {name: (out / name).read_bytes() if (out / name).is_file() else None for name in ("latest",)}
    listing = sorted(os.listdir(step))
    code, err = run_cli("train", *runs["common"], "--out", out, "--steps", 8, "--resume")
    assert code == 2, err
    assert message in err, err
    assert sorted(os.listdir(step)) == listing
    assert (out / "latest").read_bytes() == before["latest"]
    assert not (out / "step-00000008").exists()


def test_streaming_resume_is_bitwise(tmp_path):
    """--streaming over sharded JSON lines (span corruption): 6 steps straight == 3 + --resume 3,
    losses and weights, although the stream was cut in the middle of a shard and of a pack buffer."""
    import json

    data = write_data(str(tmp_path / "data"))
    texts = open(data["text"], encoding="utf-8").read().splitlines()
    for shard in range(3):
        with open(tmp_path / f"shard-{shard}.jsonl", "w", encoding="utf-8") as handle:
            for text in texts[shard::3]:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    common = ["--data", str(tmp_path / "shard-*.jsonl"), "--streaming", "--config", data["config"], "--tokenizer",
              spiece_dir(), "--batch-size", 4, "--grad-accum", 2, "--max-input-length", 24, "--dropout", "0.1",
              "--seed", 2, "--quiet"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, err = run_cli("train", *common, "--out", straight, "--steps", 6)
    assert code == 0, err
    assert "streaming 3 file(s)" in err and "the first 64 records of the stream" in err
    assert run_cli("train", *common, "--out", split, "--steps", 3)[0] == 0
    assert run_cli("train", *common, "--out", split, "--steps", 6, "--resume")[0] == 0
    assert losses(split) == losses(straight) and len(losses(straight)) == 6
    a = mt5fn.flatten_params(mt5fn.load_pretrained(straight / "step-00000006")[1])
    b = mt5fn.flatten_params(mt5fn.load_pretrained(split / "step-00000006")[1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(split / "step-00000006" / "trainer_state.pt", weights_only=True)
    assert state["data"]["examples_seen"] == 24 and state["data"]["stream"]["files"]
