"""Intra-op thread counts for the generation loop (a per-call setting, never stored on weights)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` intra-op threads, restoring the setting afterwards."""
    saved = torch.get_num_threads()
    if count == saved:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def loop_threads() -> int | None:
    """Intra-op threads for a decoding step outside the LM head (None: torch's own setting).

    Outside the head, a decoding step is ~50 small matrix products and ~500
    tiny ops. On an idle CPU they run faster on all of torch's threads
    (measured 2026-12-05 on a 2-core Intel Xeon with AMX, mt5-small shape, 32
    tokens: 2 threads against 1 took 0.84 / 1.30 / 1.33 s against 0.98 / 1.57 /
    1.59 s in fp32 for greedy batch 1 / batch 8 / beam 4, and 0.37 / 0.55 /
    0.75 s against 0.45 / 0.70 / 0.93 s in int8). On a busy CPU each parallel
    region waits for a descheduled thread (measured on a shared 2-core EPYC at
    load average ~6: a 20 us attention call took 4-12 ms on two threads and 9
    us on one; greedy decoding 6-8 s against 2.3-3.3 s). So the default,
    ``auto``, looks at the machine when a call starts: one thread when the
    one-minute load average exceeds the usable CPUs by more than one (other
    work is waiting for them), else torch's setting. The head and the encoder
    of a long input always use every thread. ``MT5FN_DECODE_LOOP_THREADS``
    overrides: ``auto``, a count, or 0 for torch's setting everywhere.
    """
    value = os.environ.get("MT5FN_DECODE_LOOP_THREADS", "auto").strip().lower() or "auto"
    if value == "auto":
        return 1 if _oversubscribed() else None
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"MT5FN_DECODE_LOOP_THREADS must be 'auto' or an int, got {value!r}") from None
    return count if count > 0 else None


def _oversubscribed() -> bool:
    """More runnable work than CPUs: the one-minute load average above the usable CPUs plus one."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume an idle machine
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return load > cpus + 1
