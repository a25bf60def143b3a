"""Training mt5fn models: a pure train step, torch.optim over the pytree, lr schedules.

    optimizer = make_optimizer(params, "adamw", lr=1e-3)     # owns params' leaves
    scheduler = make_scheduler(optimizer, "inverse_sqrt", warmup_steps=100)
    for micro_batches in batches:
        result = train_step(params, cfg, micro_batches, max_grad_norm=1.0)
        apply_gradients(optimizer, params, result.grads)    # updates params in place
        scheduler.step()
"""

from ._optim import apply_gradients, make_optimizer
from ._schedule import lr_factor, make_scheduler
from ._step import StepResult, clip_by_global_norm, global_norm, train_step
from ._loop import TrainError, TrainResult, read_metrics, train
from ._profiling import maybe_profile

# One import line per module above; everything public they import is exported.
__all__ = sorted(name for name in dir() if not name.startswith("_"))
