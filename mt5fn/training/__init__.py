"""Training mt5fn models: the run (``TrainConfig`` -> ``train``), a pure train step, torch.optim
over the pytree, lr schedules, evaluation, DDP and FSDP2.

    result = train(TrainConfig(data=("train.jsonl",), out="run", steps=1000, batch_size=32,
                               mode="supervised", from_checkpoint="mt5-small", eval_data=("dev.jsonl",)))

    optimizer = make_optimizer(params, "adamw", lr=1e-3)     # owns params' leaves
    scheduler = make_scheduler(optimizer, "inverse_sqrt", warmup_steps=100)
    for micro_batches in batches:
        result = train_step(params, cfg, micro_batches, max_grad_norm=1.0)
        apply_gradients(optimizer, params, result.grads)    # updates params in place
        scheduler.step()
"""

from ._config import TrainConfig, TrainConfigError
from ._errors import TrainError
from ._distributed import resolve_device
from ._eval import EvalSet, build_eval_set, evaluate, generation_metrics
from ._optim import apply_gradients, make_optimizer
from ._schedule import lr_factor, make_scheduler
from ._step import StepResult, clip_by_global_norm, global_norm, subtree, train_step
from ._loop import TrainResult, train
from ._logging import read_metrics
from ._lock import RunLock
from ._state import resolve_checkpoint
from ._profiling import maybe_profile

# One import line per module above; everything public they import is exported.
__all__ = sorted(name for name in dir() if not name.startswith("_"))
