"""Crash-safe writes: a file or a whole directory appears complete or not at all.

A directory is built in a temporary sibling (same filesystem, so ``rename`` is
atomic), every file is fsynced, and only then swapped into place: the previous
directory is renamed aside, the new one renamed in, and the old one deleted.
If anything fails before the swap, the temporary directory is removed and the
previous checkpoint at the target path is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from typing import Callable, Iterator


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some filesystems refuse to open directories; nothing more we can do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every regular file under ``root``, then the directories bottom-up."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                _fsync_path(full)
        _fsync_path(dirpath, directory=True)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``."""
    path = os.path.abspath(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_path(os.path.dirname(path), directory=True)


def atomic_write_text(path: str, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (cheap, leaves ``src`` intact) or copy when linking is impossible."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: str, new: str, keep: Callable[[str], bool]) -> None:
    """Bring the entries of ``old`` that ``keep`` accepts (and ``new`` lacks) into ``new``."""
    for name in os.listdir(old):
        src, dst = os.path.join(old, name), os.path.join(new, name)
        if not keep(name) or os.path.lexists(dst):
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    ``keep(name)`` selects entries of an existing ``path`` to carry into the new
    directory (hard links, so the old directory stays intact until the swap);
    the rest is dropped with the old directory. On error nothing at ``path``
    changes, the temporary directory is removed, and so are any parent
    directories this call created.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"path: {path!r} exists and is not a directory")
    parent, name = os.path.split(path)
    created: list[str] = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield tmp
        if keep is not None and os.path.isdir(path):
            _carry_over(path, tmp, keep)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # innermost first
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    old = None
    if os.path.isdir(path):
        old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(parent, directory=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
