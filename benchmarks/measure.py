"""How the benchmark measures: wall time, peak memory, FLOPs and the machine's matmul peak.

Time: after warm-up calls, the implementations of a case run *interleaved*
(A, B, C, A, B, C, ...) so that load from other processes on a shared machine
hits all of them alike; each reports the median of its runs.

Peak memory is the high-water mark of bytes held by tensors *allocated during
the call*, above what was live before it (weights and inputs excluded, the
returned outputs and gradients included):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- CPU: torch has no allocator statistics, so one extra (untimed) call runs
  under ``torch.profiler`` with ``profile_memory=True``; every tensor
  allocation and free of the c10 CPU allocator is an event with a signed size,
  and the peak of their running sum is the answer. Both implementations
  allocate through the same allocator, so the numbers compare like with like;
  Python objects and the allocator's own caching are not counted.

FLOPs are counted once per case by ``torch.utils.flop_counter.FlopCounterMode``
on a meta-device replica of mt5fn's computation (matmuls and attention only;
both implementations do the same arithmetic), and GFLOP/s is that count over
the median time. The matmul peak is the best of several square ``mm`` calls
of the benchmark's dtype on the benchmark's device and thread count.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, the device drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int,
                        repeats: int) -> dict[str, float]:
    """Median seconds of each function, warm-up calls first, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            timed(fn, device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in samples.items()}


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        out = fn()
        del out
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                    if event.name() == "[memory]" and event.device_type() == cpu)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated above the starting point at the worst moment of one call (see module doc)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        del out
        return torch.cuda.max_memory_allocated(device) - base
    return _cpu_peak_bytes(fn)


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul / attention FLOPs of one call (run it on meta tensors: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, *, size: int | None = None,
                      repeats: int = 5) -> float:
    """Best achieved FLOP/s of a square matmul: the machine's practical ceiling for this dtype."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    timed(lambda: a @ b, device)  # warm-up: kernel selection, page faults
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2.0 * size ** 3 / best
