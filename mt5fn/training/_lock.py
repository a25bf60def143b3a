"""One run per output directory: ``OUT/.lock`` holds its owner's pid and host.

The lock is an exclusive ``flock`` on that file, which the kernel drops when
the owner dies however it dies, so a lock file left by a killed run is
*stale*: the next run on the same host takes it over with a warning. A lock
naming another host cannot be checked from here (``flock`` does not reach
across machines on every shared filesystem), so it is refused with a message
saying how to clear it by hand. A clean exit removes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Callable

from ..checks import is_int
from ._errors import EXIT_USAGE, TrainError

LOCK_NAME = ".lock"


def _read_owner(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        owner = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"unreadable": raw[:80].decode("utf-8", "replace")}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict) -> str:
    if not owner:
        return "an unknown process"
    since = owner.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}{when}"


def _alive(pid: object) -> bool:
    if not is_int(pid, 1):  # a bool or a garbled lock file names no process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The exclusive lock of one ``--out`` directory (see the module docstring)."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self, warn: Callable[[str], None]) -> None:
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise TrainError(f"--out {os.path.dirname(self.path)!r} is in use by another mt5fn train run "
                                 f"({_describe(owner)}; lock file {self.path}); wait for it to finish or choose "
                                 "another --out", EXIT_USAGE) from None
            # The file may have been removed (a run finishing) between our open and our flock: then the lock
            # we hold is on a deleted file, and another process may lock a new one. Retry on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = _read_owner(fd)
        if owner:
            if owner.get("host") not in (None, host):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise TrainError(f"--out {os.path.dirname(self.path)!r} is locked by {_describe(owner)}; this host "
                                 f"({host}) cannot tell whether that run is still going. If it is not, delete "
                                 f"{self.path} and start again", EXIT_USAGE)
            state = "still running but holds no lock" if _alive(owner.get("pid")) else "no longer running"
            warn(f"mt5fn train: warning: taking over the stale lock {self.path} of {_describe(owner)} ({state})")
        record = json.dumps({"pid": os.getpid(), "host": host, "started": time.time()}) + "\n"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode("utf-8"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)  # removed while still locked: nobody can lock this file after us
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
