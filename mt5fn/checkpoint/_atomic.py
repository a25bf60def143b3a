"""Crash-safe writes: a file or a whole directory appears complete or not at all.

Files go through a temporary file beside them and one ``os.replace``.

A directory ``D`` is replaced like this (Linux; every name lives in ``D``'s
parent, so every rename is atomic):

1. take an advisory lock, ``flock`` on ``.D.lock`` (concurrent writers to one
   path run one after the other; the lock file is removed on release);
2. finish what a killed writer left (see *recovery*), delete its leftovers;
3. build the new version in ``.D.tmp-PID-XXXX``, fsync every file;
4. rename it to ``.D.new-TOKEN``: from now on it is known to be complete;
5. swap it with ``D`` in one step, ``renameat2(RENAME_EXCHANGE)``; the old
   version now sits at ``.D.new-TOKEN``, is renamed ``.D.old-TOKEN`` and
   deleted. Filesystems without the exchange (some network filesystems) get
   two renames instead, ``D -> .D.old-TOKEN`` then ``.D.new-TOKEN -> D``.

*Recovery*, run by the next save and by ``load_pretrained`` when ``D`` is
missing: a kill between the two fallback renames leaves no ``D`` but a
complete ``.D.new-TOKEN`` (and the old version at ``.D.old-TOKEN``); the new
one is renamed into place (the old one if no new one survived). Every other
``.D.tmp-*`` / ``.D.new-*`` / ``.D.old-*`` is a dead writer's and is deleted
(under the lock no live writer can own one). So whatever moment a writer is
killed at, ``D`` is afterwards the old or the new version, whole.

A target that is a symbolic link is written *through*: the directory it points
to is replaced and the link is left as it is.

The *output rule*, the same for every path the library writes, file or folder
(``check_output_target`` is its one home; the command line adds "not one of
the run's own inputs", ``cli/_checks.py``):

* never onto a device, FIFO, socket or other non-regular file (a file output)
  or onto anything but a directory (a folder output);
* through symbolic links, for files as for folders;
* new files get ``0666 & ~umask``, new folders ``0777 & ~umask``; a file or
  folder that exists keeps its own mode (a ``0700`` checkpoint stays ``0700``);
* only leftovers this library provably made are cleaned: every temporary
  folder holds the marker file ``MARKER`` from its creation on, and a
  ``.D.tmp-*`` / ``.D.new-*`` / ``.D.old-*`` without it is the user's and is
  never touched, whatever its name;
* recovery never resurrects a stale copy: ``D`` missing is brought back only
  from a complete new version (a save killed between its two renames), never
  from an ``.old`` copy alone;
* a folder with a mount point inside is refused (the old version is deleted
  after the swap, and deleting a mount point's content is not ours to do);
* a save into the process's working directory leaves the working directory on
  the new version, not on the deleted old one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
from typing import Any, Callable, Iterator

# Named moments of a directory save; tests kill a writer at each one (see ``_step``).
STEPS = ("locked", "recovered", "written", "synced", "marked", "exchanged", "set-aside", "moved-aside",
         "moved-in", "done")


def _step(name: str) -> None:
    """Called at each moment in ``STEPS``; a no-op that tests replace to inject a kill."""


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


# Inside every temporary folder of a directory save, from its creation on: the proof that a
# ``.D.tmp-*`` / ``.D.new-*`` / ``.D.old-*`` folder is this library's and may be finished or deleted.
MARKER = ".mt5fn-save-in-progress"


def special_kind(mode: int) -> str:
    """What a non-regular, non-directory file is, in words (``"a FIFO"``, ``"a device"``, ...)."""
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def check_input_path(path: str, what: str) -> None:
    """An input ``path`` (after links) that is neither a directory nor a regular file -- a FIFO, a device, a
    socket -- is refused before anything opens it: reading a FIFO would block until some writer came."""
    try:
        info = os.stat(path)
    except OSError:
        return  # missing or unreadable: the caller's own error names it
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise ValueError(f"path: {path} is {special_kind(info.st_mode)}, not {what}; nothing was read from it")


def check_output_target(path: str | os.PathLike, kind: str = "file", flag: str = "path") -> str:
    """The resolved place a write to ``path`` replaces (symbolic links followed), after checking the
    output rule (module docstring): an existing file output is a regular file, an existing folder output
    a directory with no mount point inside. ``OSError`` naming ``flag`` and the path otherwise."""
    shown = os.fspath(path)
    target = os.path.realpath(os.path.abspath(shown))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as error:
        raise OSError(f"{flag}: {shown}: cannot be inspected ({error.strerror or error})") from None
    if kind == "file":
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{flag}: {shown} is a directory; give a file name")
        if not stat.S_ISREG(info.st_mode):
            what = special_kind(info.st_mode)
            raise OSError(f"{flag}: {shown} is {what} ({target}); outputs are written only to regular files")
    else:
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{flag}: {shown} exists and is not a directory")
        for folder, dirs, _files in os.walk(target):
            for name in dirs:
                inner = os.path.join(folder, name)
                if not os.path.islink(inner) and os.path.ismount(inner):
                    raise OSError(f"{flag}: {shown} holds the mount point {inner}; a save replaces the whole "
                                  "folder and deletes the old one, so it refuses to (unmount it or save elsewhere)")
    return target


# Names a run writes inside an output folder; an input glob that would match one of them there would
# make the run read its own output.
_WRITTEN_NAMES = ("config.json", "model.safetensors", "metrics.jsonl", "eval.json", "latest", "best",
                  "trainer_state.json", "predictions.txt", "out.txt", "out.tsv", "out.jsonl", "out.json")


def check_not_an_input(flag: str, path: str | os.PathLike, kind: str, inputs: dict[str, list[str]]) -> None:
    """An output is never one of the run's own inputs: not the same file, not inside an input folder,
    not a folder holding an input (a folder save replaces it whole), and not a path an input glob
    matches (``inputs``: flag -> the paths or globs it was given). ``ValueError`` naming both."""
    import fnmatch
    import glob

    out = os.path.realpath(os.path.abspath(os.fspath(path)))

    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)

    for source, given in inputs.items():
        for entry in given:
            if not isinstance(entry, (str, os.PathLike)) or not os.fspath(entry):
                continue
            entry = os.fspath(entry)
            if glob.has_magic(entry):
                pattern = os.path.abspath(entry)
                probes = [out] + [os.path.join(out, name) for name in _WRITTEN_NAMES]
                if kind == "dir" and any(fnmatch.fnmatch(probe, pattern) for probe in probes) \
                        or kind == "file" and fnmatch.fnmatch(out, pattern):
                    raise ValueError(f"{flag}: {os.fspath(path)} is matched by {source} {entry!r}: the run would "
                                     "read its own output; write it elsewhere")
                continue
            if not os.path.lexists(entry):
                continue
            real = os.path.realpath(entry)
            if inside(out, real) or (kind == "dir" and inside(real, out)):
                what = "is" if out == real else "is inside" if inside(out, real) else "holds"
                raise ValueError(f"{flag}: {os.fspath(path)} {what} the input {source} {entry!r}; an output is "
                                 "never written onto or into one of the run's own inputs")


def atomic_write_file(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary_path)`` fills a temporary file beside ``path``, which then replaces ``path``,
    following the output rule (module docstring): a symbolic link is written through, a device or FIFO
    refused, a new file gets the umask's mode and an existing one keeps its own. For files written by
    another library's writer (GGUF); ``atomic_write_bytes`` for bytes in hand."""
    path = check_output_target(path, "file")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp's 0600 would make every output private
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.filename is None:  # e.g. a disk that filled: name the output
            raise named(error, path) from None
        raise
    _fsync_path(os.path.dirname(path), directory=True)


def _within(name: Any, folder: str) -> bool:
    return isinstance(name, str) and (name == folder or name.startswith(folder + os.sep))


def named(error: BaseException, path: str, force: bool = False) -> BaseException:
    """An ``OSError`` that names no file (``[Errno 28] No space left on device`` from a ``write``), or with
    ``force`` one naming a temporary file, as the same error naming ``path``, the output it was writing;
    anything else as it is."""
    if isinstance(error, OSError) and (error.filename is None or force) and error.errno is not None:
        try:
            return type(error)(error.errno, error.strerror or os.strerror(error.errno), path)
        except TypeError:  # a subclass with its own constructor
            return OSError(error.errno, error.strerror or os.strerror(error.errno), path)
    return error


def atomic_write_bytes(path: str, data: bytes) -> None:
    """``data`` written to ``path`` through ``atomic_write_file``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write_file(path, write)


def atomic_write_text(path: str, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- the swap
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None) if libc is not None else None
    if fn is None:
        return False
    result = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False  # not supported by this kernel or filesystem: use the two-rename fallback
    raise OSError(code, f"cannot swap {b!r} with its new version: {os.strerror(code)}")


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


# --------------------------------------------------------------------------- the lock
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def _locked(target: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``.NAME.lock`` beside ``target``, removed again on release.

    The file is unlinked while still locked; a waiter that then gets the lock
    on the unlinked file notices that the path names another file (or none)
    and tries again, so two writers never both hold it.
    """
    with _HELD_GUARD:
        if _HELD.get(target) == threading.get_ident():
            raise RuntimeError(f"path: {target!r} is already being written by this thread "
                               "(a save nested in a save of the same directory)")
    parent, name = os.path.split(target)
    lock_path = os.path.join(parent, f".{name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                now = os.stat(lock_path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    with _HELD_GUARD:
        _HELD[target] = threading.get_ident()
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD.pop(target, None)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


# --------------------------------------------------------------------------- recovery
def _leftovers(target: str) -> list[tuple[str, str, str]]:
    """``(kind, token, path)`` of the ``.NAME.{tmp,new,old}-*`` entries beside ``target``."""
    parent, name = os.path.split(target)
    pattern = re.compile(rf"^\.{re.escape(name)}\.(tmp|new|old)-(.+)$")
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        match = pattern.match(entry)
        full = os.path.join(parent, entry)
        # The marker, not the name, proves the folder ours: a user's ``.D.old-backup`` is never touched.
        if match and os.path.isdir(full) and not os.path.islink(full) and os.path.isfile(os.path.join(full, MARKER)):
            out.append((match.group(1), match.group(2), full))
    return out


def _recover_locked(target: str) -> None:
    """Finish an interrupted swap and delete dead writers' leftovers (the caller holds the lock)."""
    found = _leftovers(target)
    if not os.path.lexists(target):
        news = {token: path for kind, token, path in found if kind == "new"}
        olds = {token: path for kind, token, path in found if kind == "old"}
        # A new version whose old twin exists is the one a killed swap was moving in; a new version
        # alone is a first save killed before its last rename. An old copy alone is stale (the user
        # deleted D, or its save failed cleanly): it is never brought back.
        pick = next((news[t] for t in news if t in olds), None)
        if pick is None and news:
            pick = max(news.values(), key=os.path.getmtime)
        if pick is not None:
            os.rename(pick, target)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(target, MARKER))
            _fsync_path(os.path.dirname(target), directory=True)
            found = [entry for entry in found if entry[2] != pick]
    for _kind, _token, path in found:
        shutil.rmtree(path, ignore_errors=True)


def resolve_target(path: str | os.PathLike) -> str:
    """The directory a save to ``path`` replaces: ``path`` itself, or where a symbolic link points."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def recover_directory(path: str | os.PathLike) -> None:
    """Bring back the directory at ``path`` if a killed save left it only under a hidden name.

    Cheap when ``path`` exists (nothing to do, no lock taken). Called by
    ``load_pretrained``; every save does the same (and also deletes leftovers).
    """
    target = resolve_target(path)
    if os.path.lexists(target) or not any(kind == "new" for kind, _, _ in _leftovers(target)):
        return
    with _locked(target):
        _recover_locked(target)


# --------------------------------------------------------------------------- directories
def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (cheap, leaves ``src`` intact) or copy when linking is impossible; links stay links."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: str, new: str, keep: Callable[[str], bool]) -> None:
    """Bring the entries of ``old`` that ``keep`` accepts (and ``new`` lacks) into ``new``."""
    temporary = re.compile(r"^\..+\.(tmp|new|old)-.+$|^\..+\.lock$")  # a killed atomic_write's leftovers
    for name in os.listdir(old):
        src, dst = os.path.join(old, name), os.path.join(new, name)
        if not keep(name) or os.path.lexists(dst) or temporary.match(name) or name == MARKER:
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)


def _commit(target: str, tmp: str) -> None:
    """Put the complete directory ``tmp`` at ``target`` (steps 4-5 of the module docstring)."""
    parent, name = os.path.split(target)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    new = os.path.join(parent, f".{name}.new-{token}")
    old = os.path.join(parent, f".{name}.old-{token}")
    os.rename(tmp, new)
    _fsync_path(parent, directory=True)
    _step("marked")
    if os.path.isdir(target):  # the old version will sit under a hidden name: mark it ours first
        _mark(target)
    if not os.path.lexists(target):
        try:
            os.rename(new, target)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        _step("moved-in")
    elif _swapped(new, target):
        _step("exchanged")
        _fsync_path(parent, directory=True)
        try:  # ``new`` holds the previous version now; the save is done, the rest is tidying up
            os.rename(new, old)
        except OSError:
            old = new  # deleted below under its name (or by the next save)
        _step("set-aside")
    else:
        try:
            os.rename(target, old)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(target, MARKER))
            shutil.rmtree(new, ignore_errors=True)
            raise
        _step("moved-aside")
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            shutil.rmtree(new, ignore_errors=True)
            raise
        _step("moved-in")
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(target, MARKER))  # the new version is the user's folder now
    _fsync_path(parent, directory=True)
    shutil.rmtree(old, ignore_errors=True)
    _step("done")


def _mark(folder: str) -> None:
    """Put ``MARKER`` in ``folder``: from now on it is provably this library's leftover if left behind."""
    with contextlib.suppress(OSError):
        with open(os.path.join(folder, MARKER), "wb"):
            pass


def _swapped(new: str, target: str) -> bool:
    """``_exchange``, removing ``new`` if the swap fails."""
    try:
        return _exchange(new, target)
    except BaseException:
        with contextlib.suppress(OSError):  # the old version stays the user's folder: unmark it
            os.unlink(os.path.join(target, MARKER))
        shutil.rmtree(new, ignore_errors=True)
        raise


def _is_cwd(target: str) -> bool:
    try:
        return os.path.samefile(os.getcwd(), target)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    ``keep(name)`` selects entries of an existing ``path`` to carry into the new
    directory (hard links, so the old directory stays intact until the swap);
    the rest is dropped with the old directory. On error nothing at ``path``
    changes, the temporary directory is removed, and so are any parent
    directories this call created. A kill at any moment leaves the old or the
    new version (see the module docstring); a symbolic link at ``path`` is
    written through.
    """
    target = check_output_target(path, "dir")
    parent = os.path.dirname(target)
    created: list[str] = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    try:
        with _locked(target):
            _step("locked")
            _recover_locked(target)
            _step("recovered")
            tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-{os.getpid()}-", dir=parent)
            try:
                with open(os.path.join(tmp, MARKER), "wb"):  # proves the folder ours until the swap is done
                    pass
                try:  # an existing folder keeps its own mode; a new one follows the umask (not mkdtemp's 0700)
                    mode = stat.S_IMODE(os.stat(target).st_mode)
                except FileNotFoundError:
                    mode = 0o777 & ~_umask()
                os.chmod(tmp, mode)
                in_cwd = _is_cwd(target)
                yield tmp
                _step("written")
                if keep is not None and os.path.isdir(target):
                    _carry_over(target, tmp, keep)
                fsync_tree(tmp)
                _step("synced")
            except BaseException as error:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(error, OSError) and (error.filename is None or _within(error.filename, tmp)):
                    raise named(error, target, force=True) from None  # e.g. a full disk: the output, not a temp
                raise
            _commit(target, tmp)
            if in_cwd:  # the old folder the cwd pointed at is deleted: move onto the new version
                os.chdir(target)
    except BaseException:
        for directory in created:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
