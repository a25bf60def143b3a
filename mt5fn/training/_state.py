"""Training checkpoints: the model in Hugging Face format plus everything needed to resume.

One directory per saved step, ``OUT/step-00000100/``, holds

* ``config.json`` + ``model.safetensors`` (``mt5fn.save_pretrained``: transformers
  loads it), or for a LoRA run only the adapter in PEFT's format
  (``adapter_config.json`` + ``adapter_model.safetensors``);
* the tokenizer;
* ``trainer_state.pt``: optimizer and scheduler state dicts, the RNG states
  (torch, CUDA, python ``random``), the data position, the evaluation state
  and the run settings; under FSDP the optimizer state is instead sharded in
  ``optimizer/`` through ``torch.distributed.checkpoint`` (each rank writes
  its own shards);
* ``trainer_state.json``: the same metadata in readable form.

The directory is assembled by ``mt5fn.checkpoint.atomic_directory`` and only
then is ``OUT/latest`` (a one-line file naming the directory) replaced by an
atomic rename; ``OUT/best`` names the checkpoint with the best evaluation
metric the same way. A crash at any moment leaves both naming complete
checkpoints.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Callable

import torch

from ..checkpoint import atomic_directory, atomic_write_text

LATEST = "latest"
BEST = "best"
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
SHARDED_OPTIMIZER = "optimizer"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing, incomplete or unreadable."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_states() -> dict[str, Any]:
    """The process's global random states (torch, CUDA, python ``random``)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_as_python_state(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_python_state(state: Any) -> tuple:
    # torch.load may give lists back for tuples; random.setstate needs tuples.
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss


def _readable(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if isinstance(value, (int, float, str, bool, dict))
            and key not in ("optimizer", "scheduler", "rng", "data")} | {
        "data": {k: v for k, v in state.get("data", {}).items() if isinstance(v, (int, float, str, bool))}}


def write_state(directory: str, state: dict[str, Any]) -> None:
    torch.save(state, os.path.join(directory, STATE_FILE))
    with open(os.path.join(directory, STATE_JSON), "w", encoding="utf-8") as handle:
        json.dump(_readable(state), handle, indent=2, sort_keys=True, default=str)


def save_step(out_dir: str, step: int, write: Callable[[str], None], *, collective: Callable[[str], None] | None = None,
              share: Callable[[Any], Any] = lambda value: value, is_main: bool = True) -> str:
    """Write the step-``step`` checkpoint atomically and point ``latest`` at it; returns its path.

    ``write(tmp)`` (rank 0) fills the directory; ``collective(tmp)`` runs on every
    rank first (sharded state: each rank writes its part into the same folder,
    whose name ``share`` sends from rank 0 to the others).
    """
    name = step_dir_name(step)
    final = os.path.join(out_dir, name)
    if not is_main:
        tmp = share(None)
        if collective is not None:
            collective(tmp)
        share(None)  # wait until rank 0 has put the checkpoint in place
        return final
    with atomic_directory(final) as tmp:
        share(tmp)
        if collective is not None:
            collective(tmp)
        write(tmp)
    atomic_write_text(os.path.join(out_dir, LATEST), name + "\n")
    share(None)
    return final


def point(out_dir: str, pointer: str, checkpoint: str) -> None:
    """Make ``OUT/<pointer>`` (``latest`` / ``best``) name ``checkpoint`` (atomic)."""
    atomic_write_text(os.path.join(out_dir, pointer), os.path.basename(checkpoint) + "\n")


def latest_checkpoint(out_dir: str, pointer: str = LATEST) -> str | None:
    """The directory ``OUT/latest`` (or ``OUT/best``) names, or None when there is none."""
    path = os.path.join(out_dir, pointer)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        name = handle.read().strip()
    if not name or os.sep in name or name.startswith("."):
        raise CheckpointError(f"--resume: {path!r} is corrupt (names {name!r}, expected step-NNNNNNNN)")
    return os.path.join(out_dir, name)


def resolve_checkpoint(path: str) -> str:
    """``path`` itself, or the checkpoint directory a pointer file (``OUT/latest``, ``OUT/best``) names."""
    if os.path.isfile(path) and os.path.getsize(path) < 256:
        with open(path, encoding="utf-8", errors="replace") as handle:
            name = handle.read().strip()
        target = os.path.join(os.path.dirname(path), name)
        if name.startswith("step-") and os.sep not in name and os.path.isdir(target):
            return target
    return path


def read_state(path: str) -> dict[str, Any]:
    """The trainer state of a checkpoint directory, with clear errors when it is damaged."""
    if not os.path.isdir(path):
        raise CheckpointError(f"--resume: checkpoint directory {path!r} is missing")
    present = set(os.listdir(path))
    adapter = "adapter_config.json" in present
    needed = list(ADAPTER_FILES) if adapter else ["config.json"]
    missing = [name for name in [*needed, STATE_FILE] if name not in present]
    if not adapter and not any(name.endswith(".safetensors") or name.endswith(".bin") for name in present):
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(f"--resume: checkpoint {path!r} is missing {', '.join(missing)}")
    file = os.path.join(path, STATE_FILE)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of a truncated or foreign file
        raise CheckpointError(f"--resume: {file!r} is corrupt ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"--resume: {file!r} is not an mt5fn trainer state (format {FORMAT_VERSION})")
    if state.get("sharded_optimizer") and SHARDED_OPTIMIZER not in present:
        raise CheckpointError(f"--resume: checkpoint {path!r} is missing {SHARDED_OPTIMIZER}/ (the FSDP "
                              "optimizer shards)")
    return state
