"""What a run reports: the tqdm bar, TensorBoard scalars and ``OUT/metrics.jsonl`` (rank 0 only).

``metrics.jsonl`` holds one JSON object per line: a training record per step
(``step, loss, lr, grad_norm, tokens_per_s``) and an evaluation record per
evaluation (``step, eval_loss`` and, with generation, ``eval_exact_match,
eval_bleu, eval_chrf``: transformers' Trainer names). TensorBoard gets the
same numbers as ``train/*`` and ``eval/*`` scalars. A resumed run first cuts
the file back to the checkpoint's step; a torn last line (a crash in the
middle of a write) is dropped then, with a warning.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

from ..checkpoint import atomic_write_text

METRICS = "metrics.jsonl"
TRAIN_SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s")


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def truncate_metrics(path: str, start: int, warn: Callable[[str], None]) -> None:
    """Keep only the records of steps <= ``start`` (a resumed run rewrites what followed); drop torn lines."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    kept, torn = [], 0
    for line in lines:
        if not line.strip():
            continue
        record = _parse(line)
        if record is None:
            torn += 1
            continue
        if record["step"] <= start:
            kept.append(line + "\n")
    if torn:
        warn(f"mt5fn train: warning: dropped {torn} torn line(s) of {path} (a write cut short by a crash)")
    atomic_write_text(path, "".join(kept))


def read_metrics(out_dir: str) -> list[dict[str, Any]]:
    """The records a run wrote to ``OUT/metrics.jsonl`` (training and evaluation), skipping a torn line."""
    with open(os.path.join(out_dir, METRICS), encoding="utf-8", errors="replace") as handle:
        return [record for record in map(_parse, handle) if record is not None]


class Logger:
    """tqdm bar, TensorBoard scalars and ``metrics.jsonl``; a no-op on ranks other than 0."""

    def __init__(self, out_dir: str, total: int, start: int, enabled: bool, quiet: bool,
                 echo: Callable[[str], None]) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        self.postfix: dict[str, str] = {}
        if not enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, disable=quiet,
                        file=sys.stderr)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            echo("mt5fn train: tensorboard is not installed, so no TensorBoard scalars are written "
                 "(pip install 'mt5fn[train]' or pip install tensorboard)")
        else:
            self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        self.metrics_path = os.path.join(out_dir, METRICS)
        truncate_metrics(self.metrics_path, start, echo)
        self.metrics = open(self.metrics_path, "a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def log_step(self, step: int, loss: float, lr: float, grad_norm: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s}
        self._write(record)
        if self.writer is not None:
            for name in TRAIN_SCALARS:
                self.writer.add_scalar(f"train/{name}", record[name], step)
        if self.bar is not None:
            self.postfix.update(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(1)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, **metrics})
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name.removeprefix('eval_')}", value, step)
            self.writer.flush()
        if self.bar is not None:
            for name, value in metrics.items():
                self.postfix[name] = f"{value:.4g}"
            self.bar.set_postfix(self.postfix, refresh=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.metrics.close()
