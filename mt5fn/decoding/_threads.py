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
    """The intra-op threads ``MT5FN_DECODE_LOOP_THREADS`` fixes for the decoding loop, or None for
    ``auto`` (unset): the loop's own work on one thread, each step's block work as ``StepThreads``
    measures. ``0`` means torch's setting everywhere."""
    value = os.environ.get("MT5FN_DECODE_LOOP_THREADS", "auto").strip().lower() or "auto"
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"MT5FN_DECODE_LOOP_THREADS must be 'auto' or an int, got {value!r}") from None
    return count if count > 0 else torch.get_num_threads()


class StepThreads:
    """Intra-op threads for the block work of each decoding step (the head always gets every thread).

    Outside the head, a step is ~50 small matrix products and ~500 tiny ops.
    Whether two threads beat one depends on the machine *now*, not on the CPU:
    measured 2026-12-05 on an idle 2-core Intel Xeon with AMX (mt5-small
    shape, 32 tokens) two threads took 0.84 / 1.30 / 1.33 s against 0.98 / 1.57
    / 1.59 s for greedy batch 1 / batch 8 / beam 4 in fp32 (int8: 0.37 / 0.55 /
    0.75 against 0.45 / 0.70 / 0.93 s); in a process where CTranslate2 had
    run (its OpenMP team binds to torch's libgomp, which then counts more
    threads than cores and wakes its workers with a futex for every parallel
    region instead of spinning), int8 greedy took 0.63 s on two threads and
    0.45 s on one; on a shared 2-core EPYC at
    load ~6 a 20 us attention call took 4-12 ms on two threads and 9 us on one.
    So each call measures: steps 1-4 alternate between one thread and all of
    them (step 0 runs the prefix and is not comparable), and the rest run on
    the count whose faster probe was faster. A fixed ``MT5FN_DECODE_LOOP_THREADS``
    skips the probes.
    """

    PROBES = 2  # timed steps per candidate

    def __init__(self, all_threads: int) -> None:
        fixed = loop_threads()
        self.options = [fixed] if fixed is not None else sorted({1, all_threads})
        self.chosen = self.options[0] if len(self.options) == 1 else None
        self.times: dict[int, list[float]] = {count: [] for count in self.options}
        self.steps = 0

    def next(self) -> int:
        """The thread count for the coming step."""
        return self.chosen if self.chosen is not None else self.options[self.steps % 2]

    def record(self, threads: int, seconds: float) -> None:
        """The coming step ran on ``threads`` and took ``seconds``."""
        self.steps += 1
        if self.chosen is not None or self.steps == 1:
            return
        self.times[threads].append(seconds)
        if all(len(times) >= self.PROBES for times in self.times.values()):
            self.chosen = min(self.options, key=lambda count: min(self.times[count]))
