"""Model selection: which evaluation was best, and when to stop a run that stopped improving.

``Selection`` follows one metric (``--best-metric``, e.g. ``eval_bleu``) in
one direction (``--best-mode``: ``max``, or ``min`` for ``eval_loss``). An
evaluation *improves* when its value is strictly better than the best so
far; the loop then saves that step's checkpoint and points ``OUT/best`` at
it. ``--early-stopping-patience K`` stops the run after K evaluations in a
row without improvement (transformers' ``EarlyStoppingCallback`` rule). The
state travels in the checkpoint, so a resumed run keeps counting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class Selection:
    metric: str | None
    mode: str | None
    patience: int | None
    best_value: float | None = None
    best_step: int | None = None
    stale: int = 0  # evaluations in a row without improvement

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """Record one evaluation; True when it is the new best."""
        if self.metric is None:
            return False
        value = metrics[self.metric]
        better = math.isfinite(value) and (self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value))
        if better:
            self.best_value, self.best_step, self.stale = value, step, 0
        else:
            self.stale += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "best_value": self.best_value,
                "best_step": self.best_step, "stale": self.stale}

    def restore(self, state: dict[str, Any] | None) -> None:
        if not state or state.get("metric") != self.metric:
            return
        self.best_value, self.best_step, self.stale = state["best_value"], state["best_step"], int(state["stale"])
