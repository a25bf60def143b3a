"""Opening a run: the output directory, its lock, and the checkpoint a resume continues.

``open_run`` checks ``--out`` and ``--profile`` can be directories, creates
``--out``, takes its lock (rank 0; the other ranks learn the outcome), finds
``OUT/latest`` and reads its trainer state, and refuses the two mistakes
that would lose work: ``--resume`` without a checkpoint, and a new run over an
existing one. On exit the lock is released, and a directory this run created
but left empty is removed again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import _distributed as D
from ._config import TrainConfig
from ._errors import TrainError
from ._lock import RunLock
from ._state import CheckpointError, latest_checkpoint, read_state

# Settings a resumed run must share with the checkpoint for its steps to be the same steps.
PINNED = ("mode", "batch_size", "grad_accum", "seed", "max_input_length", "max_target_length", "optimizer",
          "lr", "weight_decay", "schedule", "warmup", "dropout", "max_grad_norm", "bf16", "data_sha256",
          "prefix", "pack", "streaming", "shuffle_buffer", "input_field", "target_field", "text_field",
          "tsv_header", "fsdp", "lora_rank", "lora_alpha", "lora_targets", "lora_dropout", "base_model")


@dataclass
class Run:
    config: TrainConfig
    out: str
    existing: str | None  # the checkpoint to resume from
    state: dict[str, Any] | None  # its trainer state


def check_directory_path(path: str, flag: str) -> None:
    """``path`` is a directory or can become one: no part of it is an existing file."""
    probe = os.path.abspath(path)
    while True:
        if os.path.exists(probe):
            if not os.path.isdir(probe):
                where = "is a file" if probe == os.path.abspath(path) else f"is under the file {probe!r}"
                raise TrainError(f"{flag} {path!r} {where}; it must be a directory")
            return
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent


def settings_of(config: TrainConfig, dropout: float, data_sha: str, base_model: str | None) -> dict[str, Any]:
    values = {name: getattr(config, name) for name in PINNED if hasattr(config, name)}
    values.update(dropout=dropout, data_sha256=data_sha, base_model=base_model,
                  lora_targets=list(config.lora_targets) if config.lora_rank else None)
    return values


def check_same_settings(saved: dict[str, Any], now: dict[str, Any], path: str) -> None:
    differ = [f"{name}: checkpoint {saved.get(name)!r}, now {now[name]!r}" for name in PINNED
              if saved.get(name) != now[name]]
    if differ:
        raise TrainError(f"--resume: the run settings differ from checkpoint {path!r}, so it cannot continue "
                         "the same run: " + "; ".join(differ))


@contextlib.contextmanager
def open_run(config: TrainConfig, ctx: D.Dist, say: Callable[[str], None]) -> Iterator[Run]:
    out = config.out
    check_directory_path(out, "--out")
    if config.profile:
        check_directory_path(config.profile, "--profile")
    created = not os.path.isdir(out)
    lock = RunLock(out)
    failure = None
    if ctx.is_main:
        try:
            os.makedirs(out, exist_ok=True)
            lock.acquire(say)
        except TrainError as error:
            failure = str(error)
        except OSError as error:
            failure = f"--out {out!r} cannot be created or locked ({error})"
    failure = D.broadcast_object(ctx, failure)
    if failure is not None:
        raise TrainError(failure)
    try:
        try:
            existing = latest_checkpoint(out)
        except CheckpointError as error:
            raise TrainError(str(error)) from None
        if config.resume and existing is None:
            raise TrainError(f"--resume: {out!r} holds no checkpoint (no 'latest' file); start without --resume")
        if not config.resume and existing is not None:
            raise TrainError(f"--out {out!r} already holds a checkpoint ({existing}); pass --resume to continue "
                             "it, or choose another --out (nothing was overwritten)")
        state = None
        if existing is not None:
            try:
                state = read_state(existing)
            except CheckpointError as error:
                raise TrainError(str(error)) from None
        yield Run(config, out, existing, state)
        D.barrier(ctx)  # (not after an error: a failed rank must not wait for the others)
    finally:
        if ctx.is_main:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(out)  # only succeeds when the run left nothing there
