"""Ctrl-C / SIGTERM during training: finish the step, save, exit 130 (a second signal aborts)."""

from __future__ import annotations

import signal
import sys
from typing import Any


class Interrupt:
    """Turns the first SIGINT / SIGTERM into a flag checked between steps; a second one aborts."""

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        print(f"\nmt5fn train: {signal.Signals(signum).name} received; saving a checkpoint after this step "
              "(send it again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
