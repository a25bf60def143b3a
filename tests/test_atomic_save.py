"""Crash-safe saves: a writer killed at any step leaves the old or the new checkpoint, whole.

The save is killed (SIGKILL, no cleanup runs) at every named step of
``mt5fn.checkpoint._atomic`` and in the middle of writing the weights, on both
swap paths (one ``renameat2(RENAME_EXCHANGE)``, and the two-rename fallback for
filesystems without it). After each kill the target loads as the old or the
new model -- exactly which one is known from the step -- and the next save
leaves no hidden directories or lock files behind. Also: concurrent writers
serialise, a link at the target is written through, and one real subprocess
is killed mid-swap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import mt5fn
from mt5fn.checkpoint import _atomic
from test_checkpoint import tiny

CFG = tiny("mt5")
OLD, NEW, NEXT = (mt5fn.init_params(CFG, seed=s) for s in (0, 1, 2))


def same(a: dict, b: dict) -> bool:
    fa, fb = mt5fn.flatten_params(a), mt5fn.flatten_params(b)
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def killed_save(target, params, point: str, *, fallback: bool, max_shard_size=3000) -> int:
    """Save ``params`` in a forked child that SIGKILLs itself at ``point``; returns its wait status signal."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def step(name: str) -> None:
                if name == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            _atomic._step = step
            if fallback:
                _atomic._exchange = lambda a, b: False
            if point.startswith("shard:"):
                import safetensors.torch

                real, calls = safetensors.torch.save_file, {"n": 0}

                def save_file(*args, **kwargs):
                    calls["n"] += 1
                    if calls["n"] == int(point.split(":")[1]):
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)

                safetensors.torch.save_file = save_file
            mt5fn.save_pretrained(params, CFG, target, max_shard_size=max_shard_size)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


# (step, swap path, which version the target holds after the kill)
BEFORE_SWAP = ["locked", "recovered", "shard:2", "written", "synced", "marked"]
CASES = ([(p, "exchange", "old") for p in BEFORE_SWAP] + [(p, "exchange", "new") for p in ("exchanged", "set-aside",
                                                                                            "done")]
         + [("marked", "renames", "old"), ("moved-aside", "renames", "new"), ("moved-in", "renames", "new"),
            ("done", "renames", "new")])


@pytest.mark.parametrize("point, mode, expected", CASES, ids=[f"{p}-{m}" for p, m, _ in CASES])
def test_kill_at_every_step_leaves_old_or_new(tmp_path, point, mode, expected):
    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target, max_shard_size=3000)
    (target / "notes.txt").write_text("kept\n")
    assert killed_save(target, NEW, point, fallback=mode == "renames") == signal.SIGKILL
    if point == "moved-aside":  # the only moment with no directory at the path: the next load recovers it
        assert not target.exists()
    _, loaded = mt5fn.load_pretrained(target)
    assert same(loaded, NEW if expected == "new" else OLD)
    assert (target / "notes.txt").read_text() == "kept\n"
    mt5fn.save_pretrained(NEXT, CFG, target, max_shard_size=3000)  # cleans what the dead writer left
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert same(mt5fn.load_pretrained(target)[1], NEXT)
    assert not any(name.startswith(".") for name in os.listdir(target))


@pytest.mark.parametrize("point", ["written", "marked", "moved-in"])
def test_kill_during_the_first_save(tmp_path, point):
    """No old version: afterwards the path is absent or the new checkpoint, never a partial one."""
    target = tmp_path / "ckpt"
    assert killed_save(target, NEW, point, fallback=False) == signal.SIGKILL
    if point == "written":
        with pytest.raises(FileNotFoundError):
            mt5fn.load_pretrained(target)
    else:  # complete: either in place already or recovered from its hidden name
        assert same(mt5fn.load_pretrained(target)[1], NEW)
    mt5fn.save_pretrained(NEXT, CFG, target)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import mt5fn
    from mt5fn.checkpoint import _atomic
    from test_checkpoint import tiny
    cfg = tiny("mt5")
    _atomic._exchange = lambda a, b: False  # the two-rename path, where a gap exists
    _atomic._step = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == "moved-aside" else None
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=1), cfg, sys.argv[1], max_shard_size=3000)
""")


def test_a_real_process_killed_in_the_gap_is_recovered_by_the_next_load(tmp_path):
    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target, max_shard_size=3000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(target)], env=env, timeout=300)
    assert result.returncode == -signal.SIGKILL
    assert not target.exists() and any(name.startswith(".ckpt.new-") for name in os.listdir(tmp_path))
    assert same(mt5fn.load_pretrained(target)[1], NEW)


def test_concurrent_writers_serialise(tmp_path):
    """Two processes save to one path over and over: no error, and the path is always one whole version."""
    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    children = []
    for seed in (1, 2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                params = mt5fn.init_params(CFG, seed=seed)
                for _ in range(4):
                    mt5fn.save_pretrained(params, CFG, target, max_shard_size=3000)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    seen = []
    while len(seen) < 20:  # read while they write: every load is a complete version
        _, params = mt5fn.load_pretrained(target)
        seen.append(next(s for s, p in enumerate((OLD, NEW, NEXT)) if same(params, p)))
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
    assert any(same(mt5fn.load_pretrained(target)[1], p) for p in (NEW, NEXT))
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_writers_in_threads_serialise_on_the_lock(tmp_path, monkeypatch):
    """While one writer holds the lock another waits; the later one's version ends up in place."""
    import fcntl

    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    holding, release = threading.Event(), threading.Event()

    def step(name: str) -> None:
        if name == "synced" and threading.current_thread().name == "first":
            holding.set()
            release.wait(timeout=60)

    monkeypatch.setattr(_atomic, "_step", step)
    a = threading.Thread(target=mt5fn.save_pretrained, args=(NEW, CFG, target), name="first")
    a.start()
    assert holding.wait(timeout=60)
    with open(tmp_path / ".ckpt.lock", "rb") as lock:  # held: a non-blocking attempt fails
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    b = threading.Thread(target=mt5fn.save_pretrained, args=(NEXT, CFG, target))
    b.start()
    release.set()
    a.join(60)
    b.join(60)
    assert same(mt5fn.load_pretrained(target)[1], NEXT)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_symlinked_target_is_written_through(tmp_path):
    real = tmp_path / "storage" / "model-v1"
    mt5fn.save_pretrained(OLD, CFG, real)
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)
    mt5fn.save_pretrained(NEW, CFG, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert same(mt5fn.load_pretrained(real)[1], NEW) and same(mt5fn.load_pretrained(link)[1], NEW)
    assert sorted(os.listdir(tmp_path / "storage")) == ["model-v1"]
    dangling = tmp_path / "later"
    dangling.symlink_to(tmp_path / "storage" / "model-v2")  # written through to where it points
    mt5fn.save_pretrained(NEXT, CFG, dangling)
    assert dangling.is_symlink() and same(mt5fn.load_pretrained(tmp_path / "storage" / "model-v2")[1], NEXT)


def test_leftovers_of_dead_writers_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    for name in (".ckpt.tmp-123-abc", ".ckpt.old-123-deadbeef", ".ckpt.new-99-cafe"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 100)
        (tmp_path / name / mt5fn.checkpoint._atomic.MARKER).write_bytes(b"")  # made by this library
    (tmp_path / ".other.tmp-1").mkdir()  # another directory's: not ours to delete
    mt5fn.save_pretrained(NEW, CFG, target)
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-1", "ckpt"]


def test_nested_save_of_the_same_path_is_a_clear_error(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="already being written"):
        with mt5fn.checkpoint.atomic_directory(target):
            mt5fn.save_pretrained(OLD, CFG, target)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_saved_directory_has_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    mt5fn.save_pretrained(OLD, CFG, tmp_path / "ckpt")
    assert os.stat(tmp_path / "ckpt").st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700



def test_a_load_that_a_save_interrupts_reads_the_new_version_whole(tmp_path, monkeypatch):
    """A save swaps a sharded version in between the reader's listing and its memory map of the single
    weights file it saw: torch's map then fails with a RuntimeError ("unable to open file ... No such
    file or directory"), and the reader must read the new version instead of failing."""
    import safetensors

    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    real_open, saves = safetensors.safe_open, []

    def swapped_before_the_map(file, *args, **kwargs):
        if not saves:
            saves.append(file)
            mt5fn.save_pretrained(NEW, CFG, target, max_shard_size=3000)  # no model.safetensors any more
            raise RuntimeError(f"unable to open file <{file}> in read-only mode: No such file or directory (2)")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", swapped_before_the_map)
    _, params = mt5fn.load_pretrained(target)
    assert saves and same(params, NEW)


def test_a_broken_folder_that_no_save_touches_still_fails_at_once(tmp_path, monkeypatch):
    from mt5fn.checkpoint import _pretrained

    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    (target / "model.safetensors").write_bytes(b"not safetensors")
    reads, real = [], _pretrained._directory_weights
    monkeypatch.setattr(_pretrained, "_directory_weights", lambda path: (reads.append(path), real(path))[1])
    with pytest.raises(ValueError, match="model.safetensors"):
        mt5fn.load_pretrained(target)
    assert len(reads) == 1  # the folder stayed the same: its own error, no second read


def test_a_converting_load_reads_the_version_it_opened_while_a_save_replaces_it(tmp_path, monkeypatch):
    """``dtype=`` conversion reads tensors with plain reads after the folder was opened; a save that
    swaps in a new ``model.safetensors`` between two of them must not mix the two versions."""
    from mt5fn.checkpoint import _weights

    target = tmp_path / "ckpt"
    mt5fn.save_pretrained(OLD, CFG, target)
    real_read, reads = _weights._Safetensors.read, []

    def save_after_the_first_read(self, name):
        tensor = real_read(self, name)
        reads.append(name)
        if len(reads) == 1:
            mt5fn.save_pretrained(NEW, CFG, target)  # same file name, same offsets, other values
        return tensor

    monkeypatch.setattr(_weights._Safetensors, "read", save_after_the_first_read)
    _, params = mt5fn.load_pretrained(target, dtype=torch.float64)
    assert len(reads) > 1
    assert same(mt5fn.tree_map(lambda t: t.float(), params), OLD)
