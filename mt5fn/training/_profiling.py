"""Optional ``torch.profiler`` tracing for the command line (``--profile DIR``).

Traces are written by ``tensorboard_trace_handler`` so the ``torch-tb-profiler``
TensorBoard plugin shows them (``tensorboard --logdir DIR``). The schedule
skips one step, warms up one, then records ``active`` steps.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def maybe_profile(trace_dir: str | None, *, active: int = 3, worker_name: str | None = None
                  ) -> Iterator[Callable[[], None]]:
    """Yield a ``step()`` callable to call once per iteration; a no-op without ``trace_dir``."""
    if not trace_dir:
        yield lambda: None
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=active, repeat=1)
    handler = torch.profiler.tensorboard_trace_handler(trace_dir, worker_name=worker_name)
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=handler,
                                record_shapes=True, with_stack=False) as prof:
        yield prof.step
