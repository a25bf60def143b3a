"""Kernel choice by measurement: which weight-leaf form multiplies fastest, timed on this machine.

The fastest way to multiply a few rows by a large weight depends on the CPU:
on a 2-core AMD EPYC (AVX512-BF16) column blocks won at one row and oneDNN's
packed weight at eight; on a 2-core Intel Xeon with AMX the same constants
lost to CTranslate2 by 1.2-2.4x. No constant is right on both, so a decoding
layout asks this module instead: ``choose`` times each candidate form of a
weight with ``linear`` for the row count a step will use, and keeps the
fastest.

A choice is a property of the machine, never of the weights: its key is the
device, the CPU (model, instruction-set flags, torch's kernel capability),
torch's version, the intra-op thread count, the dtype, the weight's shape and
the rows. So nothing can go stale when weights change, and a choice made once
serves every later call and process on the same machine:

* in memory, for the life of the process;
* in a JSON file, ``$XDG_CACHE_HOME/mt5fn/kernels.json`` (``~/.cache/...``), read
  as data only -- a corrupt or foreign file is ignored with a warning and
  rebuilt, never executed.

``MT5FN_KERNEL_CACHE`` sets the mode: unset or ``on`` (measure, remember in
memory and in the file), ``off`` (measure, remember in memory only), or
``deterministic`` (never time: each kind of weight gets its ``rule`` form, the
forms measured fastest on the EPYC; tests and CI use it, so their results do
not depend on a noisy clock).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable

import torch
from torch import Tensor

ENV_VAR = "MT5FN_KERNEL_CACHE"
MODES = ("on", "off", "deterministic")
FILE_VERSION = 1
# Each candidate is timed for at least this long (and at least MIN_CALLS calls after a warm-up): long
# enough for a median to settle on a busy 2-core machine, short enough to stay a few ms per small shape.
MIN_SECONDS, MIN_CALLS, MAX_CALLS = 0.01, 3, 50

_memory: dict[str, str] = {}  # key -> chosen form name, for this process
_file_loaded = False


def mode() -> str:
    """The kernel-cache mode from ``MT5FN_KERNEL_CACHE`` (``ValueError`` naming it when unknown)."""
    value = os.environ.get(ENV_VAR, "on").strip().lower() or "on"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)}, got {value!r}")
    return value


def _cpu_flags() -> str:
    """The instruction-set flags that decide which kernels are fast (Linux; empty elsewhere)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return ",".join(flag for flag in wanted if flag in present)
    except OSError:
        pass
    return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    """What a choice depends on besides the product itself: the device, CPU, torch and threads."""
    if device.type == "cuda":
        return f"cuda|{torch.cuda.get_device_name(device)}|torch {torch.__version__}"
    return (f"{device.type}|{_cpu_model()}|{_cpu_flags()}|{torch.backends.cpu.get_cpu_capability()}"
            f"|torch {torch.__version__}|threads {torch.get_num_threads()}")


def key(kind: str, weight_shape: tuple[int, ...], dtype: torch.dtype, rows: int | None,
        device: torch.device) -> str:
    """The table key of one product: ``kind`` (``"float"``, ``"int8"``) of a (out, in) weight at ``rows``."""
    shape = "x".join(str(int(size)) for size in weight_shape)
    return f"{machine(device)}|{kind}|{str(dtype).removeprefix('torch.')}|{shape}|rows {rows}"


def cache_file() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mt5fn", "kernels.json")


def _load_file() -> None:
    """Merge the file's choices into memory once per process; a bad file is ignored with a warning."""
    global _file_loaded
    if _file_loaded:
        return
    _file_loaded = True
    path = cache_file()
    if not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(1 << 22).decode("utf-8"))  # a kernel table is a few KB
        if not (isinstance(data, dict) and data.get("version") == FILE_VERSION and isinstance(data.get("choices"), dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in data["choices"].items())):
            raise ValueError("not an mt5fn kernel table")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        warnings.warn(f"{path}: ignoring the kernel-choice file ({error}); it is rebuilt by measurement",
                      stacklevel=3)
        return
    for name, choice in data["choices"].items():
        _memory.setdefault(name, choice)


def _save_file() -> None:
    """Write the table atomically (a temporary file, then a rename); a failure only warns."""
    path = cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".kernels-", suffix=".json", dir=os.path.dirname(path))
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"version": FILE_VERSION, "choices": dict(sorted(_memory.items()))}, out, indent=1)
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(f"{path}: could not save the kernel choices ({error}); they are kept in memory",
                      stacklevel=3)


def time_call(call: Callable[[], Any], timer: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``call()`` after one warm-up, over at least ``MIN_CALLS`` calls and ``MIN_SECONDS``."""
    call()
    times: list[float] = []
    while len(times) < MIN_CALLS or (sum(times) < MIN_SECONDS and len(times) < MAX_CALLS):
        start = timer()
        call()
        times.append(timer() - start)
    return statistics.median(times)


def choose(name: str, candidates: dict[str, Callable[[], Any]], rule: str,
           measure: Callable[[Any], float]) -> tuple[str, Any]:
    """The chosen candidate's name and its built form.

    ``name``: the product's key (``key``); ``candidates``: form name -> a builder of that form
    (builders may fail with ``RuntimeError``, e.g. a oneDNN build that refuses a shape: that
    candidate drops out); ``rule``: the candidate taken without timing (deterministic mode, or
    when it is the only one); ``measure(form)``: seconds per product with that form.
    Each candidate is built, timed and dropped in turn, so at most two copies are alive.
    """
    current = mode()
    if current == "deterministic" or len(candidates) == 1:
        return rule, candidates[rule]()
    if current == "on":
        _load_file()
    known = _memory.get(name)
    if known in candidates:
        try:
            return known, candidates[known]()
        except RuntimeError:
            pass  # this build cannot make it any more: measure again
    best: tuple[float, str, Any] | None = None
    for option, build in candidates.items():
        try:
            form = build()
            seconds = measure(form)
        except RuntimeError:
            continue
        if best is None or seconds < best[0]:
            best = (seconds, option, form)
        del form
    if best is None:
        return rule, candidates[rule]()
    _memory[name] = best[1]
    if current == "on":
        _save_file()
    return best[1], best[2]


def choices() -> dict[str, str]:
    """Every choice known to this process (the file's included when the mode reads it)."""
    if mode() == "on":
        _load_file()
    return dict(sorted(_memory.items()))


def forget() -> None:
    """Drop the in-memory table (the next choice reads the file again); for tests."""
    global _file_loaded
    _memory.clear()
    _file_loaded = False


def probe_rows(weight_in: int, rows: int | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The input a measurement multiplies: ``rows`` rows (a few when unknown) of random values."""
    generator = torch.Generator(device=device).manual_seed(0)
    count = 4 if rows is None else rows
    return torch.randn(count, weight_in, generator=generator, device=device).to(dtype)
