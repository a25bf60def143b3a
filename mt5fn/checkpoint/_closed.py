"""Checkpoint directories are closed worlds: no file is read from outside them.

A file in a checkpoint directory may be a symbolic link, but it must resolve
inside that directory, or -- in the Hugging Face cache layout, where
``models--ORG--NAME/snapshots/REV/config.json`` links to
``models--ORG--NAME/blobs/HASH`` -- inside that repository folder. Any other
link is refused when loading (the error names the link and where it points)
and its content is never copied by ``convert`` or a save. This keeps a
downloaded or shared checkpoint from pulling in, say, ``~/.ssh/id_rsa`` as
its ``tokenizer.json``.

The rule is the same for every folder the library reads -- checkpoints,
tokenizers, PEFT adapters, and the folder of a single file -- and has a second
half, ``one_version``: a read of several files of one folder sees one version
of it. A save replaces the folder in one rename (``_atomic``); a reader that
sees the folder replaced between its first and last file starts again.
"""

from __future__ import annotations

import os
import stat
from typing import Callable, TypeVar

T = TypeVar("T")

# Readings of a folder in a row that concurrent saves may interrupt before a reader gives up.
ATTEMPTS = 5


def allowed_roots(directory: str) -> list[str]:
    """The resolved folders whose files ``directory``'s links may point into."""
    root = os.path.realpath(directory)
    roots = [root]
    snapshots = os.path.dirname(root)
    repo = os.path.dirname(snapshots)
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(repo).startswith("models--"):
        roots.append(repo)
    return roots


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def checked_path(directory: str, name: str) -> str:
    """``directory/name`` after checking that it resolves inside the checkpoint (see the module docstring).

    Returns the path to open (the link itself: opening follows it to the
    checked place). A path that does not exist is returned unchecked (the
    caller reports it missing).
    """
    full = os.path.join(directory, name)
    if not os.path.lexists(full):
        return full
    real = os.path.realpath(full)
    roots = allowed_roots(directory)
    if any(_inside(real, root) for root in roots):
        _no_special_file(full)
        return full
    link = full if os.path.islink(full) else _first_link(directory, name)
    points = os.readlink(link) if link and os.path.islink(link) else real
    where = "the checkpoint directory" + (" or its Hugging Face cache repository" if len(roots) > 1 else "")
    raise ValueError(f"{link or full}: a symbolic link to {points!r} ({real}), outside {where} "
                     f"{roots[-1]!r}; refused (a checkpoint may only link to its own files)")


def _no_special_file(full: str) -> None:
    """A FIFO, device or socket in a folder is refused by name: opening a FIFO blocks until a writer comes."""
    try:
        mode = os.stat(full).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise ValueError(f"{full}: {what}, not a file of the folder; nothing was read from it")


def _first_link(directory: str, name: str) -> str | None:
    """The first path component below ``directory`` that is a symbolic link."""
    path = directory
    for part in name.split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return path
    return None


def is_inside(directory: str, name: str) -> bool:
    """Whether ``directory/name`` exists and resolves inside the checkpoint (no error)."""
    try:
        checked_path(directory, name)
    except ValueError:
        return False
    return os.path.lexists(os.path.join(directory, name))


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``: a save swaps the folder, so a change means another version."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def one_version(folder: str, read: Callable[[], T]) -> T:
    """``read()`` of several files of ``folder``, repeated until no save replaced ``folder`` meanwhile.

    Each save swaps in a new directory (a new inode), so an unchanged inode before and after means every
    file read came from one version. An error raised while the folder was being replaced is retried too
    (the old version may have been deleted under the reader). After ``ATTEMPTS`` interrupted readings
    in a row, an ``OSError`` says so.
    """
    for attempt in range(ATTEMPTS):
        before = _identity(folder)
        try:
            value = read()
        except (OSError, ValueError):
            if attempt < ATTEMPTS - 1 and _identity(folder) != before:
                continue
            raise
        if _identity(folder) == before:
            return value
    raise OSError(f"{folder}: another save replaced the folder during each of {ATTEMPTS} readings in a row; "
                  "read it when the writers pause")
