"""Exit statuses of a run and the error that carries one."""

from __future__ import annotations

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class TrainError(Exception):
    """A run that cannot start or continue; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
