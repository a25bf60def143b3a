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
* weights enter as plain dense / int8 leaves (``lay_out`` without re-laid-out
  copies): the compiler chooses its own GEMM kernels, and oneDNN-packed leaves
  are opaque to it.

Compiling takes seconds to minutes once per shape; docs/performance.md says
when it pays off. Where torch cannot compile (no C++ compiler for the CPU
backend, a device without a backend, a compiler error), ``generate`` warns once
with the reason and decodes eagerly.
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


def has_packed_leaves(params: dict) -> bool:
    """True when a leaf is oneDNN-packed (a ``prepare_decoding`` layout the compiler cannot read)."""
    return any(t.layout == torch._mkldnn for t in torch.utils._pytree.tree_leaves(params) if isinstance(t, Tensor))
