"""``--profile`` traces open in the torch-tb-profiler TensorBoard plugin: for ``mt5fn train`` and
``mt5fn generate``, the plugin's own loader (``RunLoader``, what ``tensorboard --logdir`` runs)
finds the run and its worker, and builds the overview with the profiled steps and the operator
view. Parsing the JSON ourselves would not show that the plugin can read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch_tb_profiler  # noqa: F401 -- the test extra installs it: a missing one must fail, not skip

import mt5fn
from spm import spiece_dir
from train_fixtures import run_cli, write_data

# Runs the plugin's loader in a fresh process: it starts worker processes of its own (fork here;
# the plugin's default, spawn, would re-import the test runner).
LOAD = r"""
import json, sys
from torch_tb_profiler import io
from torch_tb_profiler.profiler.loader import RunLoader

run = RunLoader("run", sys.argv[1], io.Cache()).load()
out = []
for profile in run.get_profiles():
    if profile is None or not hasattr(profile, "overview"):
        continue
    out.append({"worker": profile.worker, "views": [view.display_name for view in profile.views],
                "steps": [row[0] for row in profile.overview["steps"]["rows"]],
                "operators": [row["name"] for row in profile.operation_table_by_name["data"]]})
print(json.dumps({"name": run.name, "workers": run.workers, "profiles": out}))
"""


def _load_with_plugin(trace_dir) -> dict:
    env = {**os.environ, "TORCH_PROFILER_START_METHOD": "fork"}
    proc = subprocess.run([sys.executable, "-c", LOAD, str(trace_dir)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(loaded: dict, min_steps: int, worker: str | None = None) -> dict:
    assert loaded["name"] == "run" and len(loaded["workers"]) == 1
    assert worker is None or loaded["workers"] == [worker]
    (profile,) = loaded["profiles"]
    assert {"Overview", "Operator", "Trace"} <= set(profile["views"])
    assert len(profile["steps"]) >= min_steps
    assert "aten::mm" in profile["operators"] or "aten::addmm" in profile["operators"]
    return profile


def test_train_profile_loads_in_the_plugin(tmp_path):
    data = write_data(str(tmp_path / "data"), count=16)
    trace_dir = tmp_path / "trace"
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", tmp_path / "out", "--steps", 5, "--batch-size", 4,
                        "--profile", trace_dir, "--quiet")
    assert code == 0, err
    profile = _check(_load_with_plugin(trace_dir), min_steps=2, worker="rank0")
    assert profile["steps"] == sorted(profile["steps"], key=int)  # the training steps, in order


def test_generate_profile_loads_in_the_plugin(tmp_path, capsys):
    cfg = mt5fn.MT5Config(vocab_size=400, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          relative_attention_num_buckets=8, relative_attention_max_distance=16)
    model = tmp_path / "model"
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, model,
                          tokenizer=mt5fn.Tokenizer.from_pretrained(spiece_dir()))
    trace_dir = tmp_path / "trace"
    code, err = run_cli("generate", "--model", model, "--max-new-tokens", 8, "--min-new-tokens", 8,
                        "--profile", trace_dir, "hello world", "guten morgen")
    capsys.readouterr()
    assert code == 0, err
    _check(_load_with_plugin(trace_dir), min_steps=1)
