"""``mt5fn train`` under torchrun: 2 CPU processes (gloo, DDP over ``MT5Module``, each rank
reading its shard of every global batch, 2 accumulation micro-batches each) end with the
same weights as one process over the same global batches; only rank 0 writes checkpoints.

Adafactor is used because its update is proportional to the gradient: AdamW's first steps
move each weight by ~lr * sign(grad), so float round-off in gradients that are ~0 (summed in
another order across ranks) could flip a sign and move a weight by 2 * lr."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

import mt5fn
from spm import spiece_dir
from train_fixtures import losses, run_cli, write_data


def test_two_ranks_equal_one_process(tmp_path):
    data = write_data(str(tmp_path / "data"))
    common = ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer",
              spiece_dir(), "--steps", "3", "--batch-size", "8", "--optimizer", "adafactor", "--lr", "1e-2",
              "--quiet"]
    ddp_out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mt5fn", "train", *common, "--grad-accum", "2",
                           "--out", str(ddp_out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s) x 2 micro-batch(es) x 2" in proc.stderr
    code, err = run_cli("train", *common, "--out", tmp_path / "single")
    assert code == 0, err

    a = mt5fn.flatten_params(mt5fn.load_pretrained(ddp_out / "step-00000003")[1])
    b = mt5fn.flatten_params(mt5fn.load_pretrained(tmp_path / "single" / "step-00000003")[1])
    initial = mt5fn.flatten_params(mt5fn.init_params(mt5fn.load_pretrained(ddp_out / "step-00000003")[0], seed=0))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    assert any((a[k] - initial[k]).abs().max() > 1e-3 for k in a)  # the runs really trained
    torch.testing.assert_close(torch.tensor(losses(ddp_out)), torch.tensor(losses(tmp_path / "single")),
                               rtol=1e-6, atol=0)
    assert sorted(os.listdir(ddp_out)) == sorted(os.listdir(tmp_path / "single"))  # no per-rank leftovers


def test_more_ranks_than_examples_is_refused(tmp_path):
    data = write_data(str(tmp_path / "data"), count=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mt5fn", "train", "--data", data["pairs"], "--mode",
                           "supervised", "--config", data["config"], "--tokenizer", spiece_dir(), "--steps", "1",
                           "--batch-size", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "2 ranks but only 1 training examples" in proc.stderr
    assert not (tmp_path / "out" / "latest").exists()


def _torchrun(*argv, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mt5fn", "train", *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(tmp_path):
    """FSDP2 (fully_shard over MT5Module, gloo): 2 ranks x 2 micro-batches each give the losses of
    one process on the same global batches (1e-4 relative) and weights within AdamW's lr x steps
    bound (its first steps move a weight by ~lr * sign(grad): round-off can flip the sign of a
    near-zero gradient); rank 0 writes a normal checkpoint plus sharded optimizer state, and a
    resumed FSDP run continues bit for bit."""
    data = write_data(str(tmp_path / "data"))
    lr, steps = 1e-4, 4
    common = ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer",
              spiece_dir(), "--batch-size", "8", "--lr", str(lr), "--quiet"]
    straight = tmp_path / "fsdp"
    proc = _torchrun(*common, "--fsdp", "--grad-accum", "2", "--steps", steps, "--out", straight)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s) x 2 micro-batch(es) x 2" in proc.stderr and "FSDP2 on cpu" in proc.stderr
    code, err = run_cli("train", *common, "--steps", steps, "--out", tmp_path / "single")
    assert code == 0, err

    last = f"step-{steps:08d}"
    a = mt5fn.flatten_params(mt5fn.load_pretrained(straight / last)[1])  # gathered: a normal HF checkpoint
    b = mt5fn.flatten_params(mt5fn.load_pretrained(tmp_path / "single" / last)[1])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=2 * lr * steps, msg=key)
    torch.testing.assert_close(torch.tensor(losses(straight)), torch.tensor(losses(tmp_path / "single")),
                               rtol=1e-4, atol=0)
    shards = os.listdir(straight / last / "optimizer")
    assert sum(name.endswith(".distcp") for name in shards) == 2  # one optimizer shard file per rank

    split = tmp_path / "split"
    proc = _torchrun(*common, "--fsdp", "--grad-accum", "2", "--steps", 2, "--out", split)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _torchrun(*common, "--fsdp", "--grad-accum", "2", "--steps", steps, "--out", split, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    assert losses(split) == losses(straight)
    c = mt5fn.flatten_params(mt5fn.load_pretrained(split / last)[1])
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_fsdp_refusals(tmp_path):
    data = write_data(str(tmp_path / "data"))
    common = ["train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer",
              spiece_dir(), "--batch-size", "4", "--steps", "1", "--out", tmp_path / "out", "--fsdp"]
    code, err = run_cli(*common)
    assert code == 2 and "--fsdp shards over the ranks of a torchrun launch" in err
    code, err = run_cli(*common, "--optimizer", "adafactor")
    assert code == 2 and "aten.pow_.Scalar" in err
