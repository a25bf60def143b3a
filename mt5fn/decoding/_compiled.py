"""The one-token decoding step through ``torch.compile``: a static cache, one graph, no recompiles.

Outside the head, an eager decoding step is a few hundred tiny operations,
each paying Python and dispatcher overhead; compiled, they become a few fused
kernels (gpt-fast's recipe: a fixed-shape cache, the position as a tensor,
``fullgraph=True``; on CUDA ``mode="reduce-overhead"`` replays the step as a CUDA
graph). ``DecodeCache`` was built for it: every buffer has a fixed shape and
the position is a 0-d tensor, so the step at position 5 and at position 50 is
the same graph. ``generate(..., compile=True)`` runs its steps through
``compiled_step``:

* the step attends over every cache slot with the unwritten ones masked
  (``step_hidden`` with ``position=None``), so its shapes never depend on the position;
* the cache gets a power-of-two number of slots (at least 32), so calls with
  different ``max_new_tokens`` share a graph too; only a new batch, beam count,
  source length, prefix length or weight form compiles again;
* the weights are the decoding layout eager decoding uses (``prepare_decoding``,
  held or made for the call): each product runs the form the kernel choice
  measured fastest on this machine, the packed ones (oneDNN-blocked, column
  blocks, int8 x int8) as opaque operators in the graph (``kernels._opaque``),
  the plain and int8 ones as the compiler lowers them; the compiler fuses the
  norms, attention and elementwise work around them, most of what an eager
  step outside its products costs.

Compiling takes seconds to minutes once per shape; docs/performance.md says
when it pays off. Where torch cannot compile (no C++ compiler for the CPU
backend, a device without a backend, a compiler error), ``generate`` warns once
with the reason and decodes eagerly; a step that failed to compile is not
traced again in later calls (tracing alone takes seconds), each of which
warns once more.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable

import torch
from torch import Tensor

from ..model import MT5Config, lm_logits
from ._cache import DecodeCache, step_hidden

BACKENDS = ("inductor", "aot_eager", "eager")
MIN_SLOTS = 32

_compiled: dict[tuple[str, str], Callable[..., Any]] = {}  # (backend, mode) -> the compiled function; no weights
_failures: dict[tuple, str] = {}  # failure_key -> why compiling that step failed (tracing again fails again)


def slots_for(needed: int) -> int:
    """Cache slots for ``needed`` tokens: the next power of two, at least ``MIN_SLOTS``."""
    return max(MIN_SLOTS, 1 << (needed - 1).bit_length())


def _step(params: dict, cfg: MT5Config, cache: DecodeCache, tokens: Tensor) -> tuple[Tensor, DecodeCache]:
    """tokens (N, T) -> the last position's logits (N, V) and the cache (written in place)."""
    hidden, cache = step_hidden(params, cfg, cache, tokens, inplace=True)  # (N, T, d)
    return lm_logits(params, cfg, hidden[:, -1:])[:, 0], cache  # (N, V)


def backend_of(option: Any) -> str:
    """``compile=`` -> a backend name: True is ``"inductor"``; a string names one of ``BACKENDS``."""
    if option is True:
        return "inductor"
    if isinstance(option, str) and option in BACKENDS:
        return option
    raise ValueError(f"compile must be a bool or one of {', '.join(map(repr, BACKENDS))}, got {option!r}")


def cannot_compile(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot compile on ``device`` here, or None."""
    if backend != "inductor":
        return None
    if device.type == "cpu":
        if not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
            return "no C++ compiler on PATH for inductor's CPU code"
        return None
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (inductor's GPU code generator)
        except ImportError:
            return "triton is not installed"
        return None
    return f"no torch.compile backend for device {device.type!r}"


def compiled_step(backend: str, device: torch.device) -> Callable[..., tuple[Tensor, DecodeCache]]:
    """The compiled ``_step`` for ``backend`` (made once per process; it holds no weights)."""
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else "default"
    key = (backend, mode)
    if key not in _compiled:
        _compiled[key] = torch.compile(_step, backend=backend, mode=None if mode == "default" else mode,
                                       fullgraph=True, dynamic=False)
    return _compiled[key]


def failure_key(backend: str, device: torch.device, cfg: MT5Config, weights: dict) -> tuple:
    """What a compile failure depends on: the backend, the device, the config and the tree's structure
    and leaf forms (not its values)."""
    return backend, device.type, cfg, str(torch.utils._pytree.tree_structure(weights))


def known_failure(key: tuple) -> str | None:
    """Why compiling the step of ``key`` failed before in this process, or None."""
    return _failures.get(key)


def remember_failure(key: tuple, reason: str) -> None:
    _failures[key] = reason
