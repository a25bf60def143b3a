"""Shared pieces of the ``mt5fn train`` / ``mt5fn demo`` tests: tiny data files, a tiny config,
and a runner that calls the CLI in-process and returns (exit code, stderr)."""

from __future__ import annotations

import contextlib
import io
import json
import os

from mt5fn.cli import main
from mt5fn.demo._numbers import spell

TINY = {"model_type": "mt5", "d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 64, "num_layers": 2,
        "vocab_size": 1000, "dropout_rate": 0.0, "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16}


def write_data(directory: str, count: int = 64) -> dict[str, str]:
    """``{"pairs": TSV of input<TAB>target, "text": raw lines, "config": tiny config.json}`` in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    files = {name: os.path.join(directory, name) for name in ("pairs.tsv", "text.txt", "config.json")}
    with open(files["pairs.tsv"], "w", encoding="utf-8") as handle:
        for n in range(count):
            handle.write(f"{'de' if n % 2 else 'fr'}: {spell(n, 'de' if n % 2 else 'fr')}\t{n}\n")
    with open(files["text.txt"], "w", encoding="utf-8") as handle:
        for n in range(count):
            handle.write(f"{spell(n, 'en')} is {n}, auf Deutsch {spell(n, 'de')}, en français {spell(n, 'fr')}.\n")
    with open(files["config.json"], "w", encoding="utf-8") as handle:
        json.dump(TINY, handle)
    return {"pairs": files["pairs.tsv"], "text": files["text.txt"], "config": files["config.json"]}


def run_cli(*argv: str) -> tuple[int, str]:
    """``mt5fn ARGV`` in this process; returns (exit code, what it wrote to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def losses(out_dir: str) -> list[float]:
    """The training losses of ``OUT/metrics.jsonl`` (evaluation records skipped)."""
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [record["loss"] for record in records if "loss" in record]
