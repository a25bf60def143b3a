"""``mt5fn train --profile DIR`` writes a torch.profiler trace (TensorBoard trace handler
layout, what the torch-tb-profiler plugin reads) that parses as Chrome-trace JSON."""

from __future__ import annotations

import gzip
import json
import os

from spm import spiece_dir
from train_fixtures import run_cli, write_data


def test_profile_writes_a_parsable_trace(tmp_path):
    data = write_data(str(tmp_path / "data"), count=16)
    trace_dir = tmp_path / "trace"
    code, err = run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--config", data["config"],
                        "--tokenizer", spiece_dir(), "--out", tmp_path / "out", "--steps", 4, "--batch-size", 4,
                        "--profile", trace_dir, "--quiet")
    assert code == 0, err
    traces = [name for name in os.listdir(trace_dir) if name.endswith((".pt.trace.json", ".pt.trace.json.gz"))]
    assert len(traces) == 1, os.listdir(trace_dir)
    assert traces[0].startswith("rank0")
    path = trace_dir / traces[0]
    opener = gzip.open if traces[0].endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        trace = json.load(handle)
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("aten::") for name in names)  # real operator events were recorded
    assert any("ProfilerStep#" in name for name in names)
