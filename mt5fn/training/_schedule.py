"""Learning-rate schedules as ``torch.optim.lr_scheduler.LambdaLR`` factors.

With ``s`` the 0-based index of the step about to be taken and ``w`` the
warmup steps, the factor multiplying each group's base ``lr`` is:

* warmup (``s < w``, all kinds): ``(s + 1) / w``, linear, reaching 1 at ``s = w - 1``;
* ``constant``: 1;
* ``inverse_sqrt``: ``sqrt(max(w, 1) / (s + 1))`` -- 1 where warmup ends, then
  1/sqrt decay (T5's "rsqrt" schedule, Raffel et al. 2020, section 3.1.2);
* ``cosine``: ``final + (1 - final) * (1 + cos(pi * p)) / 2`` with
  ``p = (s - w) / (total_steps - w)`` clamped to [0, 1] (Loshchilov & Hutter,
  SGDR, without restarts): 1 where warmup ends, ``final`` after ``total_steps``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..checks import check_int, check_optional_int, check_real

KINDS = ("constant", "inverse_sqrt", "cosine")


def lr_factor(kind: str, warmup_steps: int = 0, total_steps: int | None = None,
              final_ratio: float = 0.0) -> Callable[[int], float]:
    """The schedule as a plain function of the 0-based step (what ``LambdaLR`` calls)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    check_int("warmup_steps", warmup_steps, 0, words="a non-negative int")
    if kind == "cosine":
        check_int("total_steps", total_steps, warmup_steps + 1,
                  words=f"an int > warmup_steps={warmup_steps} for the cosine schedule")
        check_real("final_ratio", final_ratio, at_least=0.0, at_most=1.0, words="in [0, 1]")
    else:
        check_optional_int("total_steps", total_steps, 1, words="a positive int or None")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        if kind == "inverse_sqrt":
            return math.sqrt(max(warmup_steps, 1) / (step + 1))
        progress = min(max((step - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)  # type: ignore[operator]
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str = "constant", warmup_steps: int = 0,
                   total_steps: int | None = None, final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` for ``optimizer``: call ``scheduler.step()`` after each ``optimizer.step()``.

    ``kind``: ``"constant"``, ``"inverse_sqrt"`` or ``"cosine"`` (needs
    ``total_steps``; decays to ``final_ratio`` times the base lr). All start
    with ``warmup_steps`` of linear warmup. ``state_dict()`` round-trips (the
    factor is rebuilt from these arguments, only the step count is saved).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(kind, warmup_steps, total_steps, final_ratio))
