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
    """Intra-op threads for a decoding step outside the LM head (the head keeps torch's).

    Outside the head, a decoding step is ~50 tiny matrix products and ~500
    small ops (plus the token choice); each parallel region costs a thread
    hand-off that exceeds its work, and on a busy machine the hand-off waits
    for a descheduled thread. Measured on a shared 2-core CPU (load average
    ~6): a 20 us attention call took 4-12 ms on two threads and 9 us on one;
    greedy decoding 6-8 s against 2.3-3.3 s. The head, ~0.5 GB of weights per
    step, uses every thread, and so does the encoder of a long input.
    ``MT5FN_DECODE_LOOP_THREADS`` overrides (0: leave torch's setting everywhere).
    """
    value = os.environ.get("MT5FN_DECODE_LOOP_THREADS", "1")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"MT5FN_DECODE_LOOP_THREADS must be an int, got {value!r}") from None
    return count if count > 0 else None
