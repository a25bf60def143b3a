"""Training checkpoints: the model in Hugging Face format plus everything needed to resume.

One directory per saved step, ``OUT/step-00000100/``, holds

* ``config.json`` + ``model.safetensors`` (``mt5fn.save_pretrained``: transformers loads it),
* the tokenizer (``spiece.model`` ...),
* ``trainer_state.pt``: optimizer and scheduler state dicts, the RNG states
  (torch, CUDA, python ``random``), the data position and the run settings,
* ``trainer_state.json``: the same metadata in readable form.

The directory is assembled under a temporary name beside its final place and
renamed into place once complete; only then is ``OUT/latest`` (a one-line
file naming the directory) replaced, again by an atomic rename. A crash at any
moment therefore leaves ``latest`` naming a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any

import torch

from ..checkpoint import atomic_write_text, fsync_tree

LATEST = "latest"
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
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


def save_checkpoint(out_dir: str, step: int, params: dict, cfg, tokenizer, state: dict[str, Any]) -> str:
    """Write the step-``step`` checkpoint atomically and point ``latest`` at it; returns its path."""
    from ..checkpoint import save_pretrained

    name = step_dir_name(step)
    final = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(params, cfg, tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, os.path.join(tmp, STATE_FILE))
        meta = {key: value for key, value in state.items() if isinstance(value, (int, float, str, bool, dict))
                and key not in ("optimizer", "scheduler", "rng")}
        with open(os.path.join(tmp, STATE_JSON), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True, default=str)
        fsync_tree(tmp)
        if os.path.exists(final):  # re-saving a step (after a resume): swap, never leave a gap
            old = os.path.join(out_dir, f".{name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(os.path.join(out_dir, LATEST), name + "\n")
    return final


def latest_checkpoint(out_dir: str) -> str | None:
    """The directory ``OUT/latest`` names, or None when no checkpoint was ever completed."""
    pointer = os.path.join(out_dir, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as handle:
        name = handle.read().strip()
    if not name or os.sep in name or name.startswith("."):
        raise CheckpointError(f"--resume: {pointer!r} is corrupt (names {name!r}, expected step-NNNNNNNN)")
    return os.path.join(out_dir, name)


def load_checkpoint(path: str) -> tuple[Any, dict, dict[str, Any]]:
    """``(cfg, params, state)`` of a checkpoint directory, with clear errors when it is damaged."""
    from ..checkpoint import load_pretrained

    if not os.path.isdir(path):
        raise CheckpointError(f"--resume: checkpoint directory {path!r} is missing")
    present = set(os.listdir(path))
    missing = [name for name in ("config.json", STATE_FILE, "spiece.model") if name not in present]
    if not any(name.endswith(".safetensors") or name.endswith(".bin") for name in present):
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(f"--resume: checkpoint {path!r} is missing {', '.join(missing)}")
    try:
        state = torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of a truncated or foreign file
        raise CheckpointError(f"--resume: {os.path.join(path, STATE_FILE)!r} is corrupt ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"--resume: {os.path.join(path, STATE_FILE)!r} is not an mt5fn trainer state "
                              f"(format {FORMAT_VERSION})")
    try:
        cfg, params = load_pretrained(path)
    except Exception as error:
        raise CheckpointError(f"--resume: model in {path!r} cannot be loaded ({error})") from None
    return cfg, params, state
