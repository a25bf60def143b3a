"""Only good weights are saved: finite, and not blown up by one update.

After every update the global L2 norm of the trained weights is computed
(one fused pass, ``torch._foreach_norm``). A non-finite norm means a non-finite
weight; a norm more than ``max_weight_growth`` times the previous one is an
exploding update (a learning rate far too high, a bad batch). Either stops the
run *before* anything is saved, so ``OUT/latest`` keeps naming the last good
checkpoint. AdamW's first steps move every weight by about ``lr``, so at sane
learning rates the norm changes by a small fraction per step; the default
factor 2 leaves ample room and still catches ``--lr 1e30`` at step 1.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._errors import EXIT_DIVERGED, TrainError


def tree_norm(leaves: list[torch.Tensor]) -> float:
    """Global L2 norm of tensors: float32 per-leaf norms combined in float64; a leaf whose float32 norm
    overflows is measured again in float64, so huge but finite weights give a finite (huge) norm and
    only a non-finite weight gives inf / nan."""
    if not leaves:
        return 0.0
    leaves = [leaf.detach() for leaf in leaves]
    norms = torch.stack(torch._foreach_norm(leaves, 2)).double()  # (leaves,)
    for index in torch.nonzero(~torch.isfinite(norms)).flatten().tolist():
        norms[index] = torch.linalg.vector_norm(leaves[index], dtype=torch.float64)
    return float(torch.linalg.vector_norm(norms))


class WeightGuard:
    """Checks each update of the weights whose norm ``norm_fn()`` returns (see the module docstring)."""

    def __init__(self, norm_fn: Callable[[], float], max_growth: float,
                 last_good: Callable[[], str | None]) -> None:
        self.norm_fn, self.max_growth, self.last_good = norm_fn, max_growth, last_good
        self.norm = norm_fn()

    def stop(self, what: str) -> TrainError:
        keep = self.last_good()
        return TrainError(f"{what}; stopping without saving. Last good checkpoint: "
                          f"{keep or 'none (no checkpoint was saved yet)'}. Lower --lr, enable clipping "
                          "(--max-grad-norm) or check the data.", EXIT_DIVERGED)

    def check(self, step: int) -> float:
        """The new norm after the update of 1-based ``step``; raises ``TrainError`` when it is bad."""
        norm = self.norm_fn()
        if not math.isfinite(norm):
            raise self.stop(f"non-finite weights after the update of step {step} (weight norm {norm})")
        if self.max_growth and self.norm > 0 and norm > self.max_growth * self.norm:
            raise self.stop(f"exploding update at step {step}: the weight norm grew from {self.norm:.4g} to "
                             f"{norm:.4g} (x{norm / self.norm:.3g}, more than --max-weight-growth "
                             f"{self.max_growth:g})")
        self.norm = norm
        return norm
