"""Run the selected cases and collect one result row per case."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import mt5fn

from . import measure
from .cases import Case, build_runners, hf_mode

IMPLS = ("transformers", "mt5fn", "compiled", "func.grad")


@dataclass
class Row:
    case: Case
    seconds: dict[str, float] = field(default_factory=dict)
    peak_bytes: dict[str, int] = field(default_factory=dict)
    compile_seconds: float | None = None
    flops: int = 0


def _raise_compile_limits() -> None:
    # Each case shape compiles once (dynamic=False); the scaling table needs more entries than the default.
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))


def run_case(case: Case, hf: torch.nn.Module, params: dict, cfg: mt5fn.MT5Config, device: torch.device, *,
             compile_mt5fn: bool, warmup: int, repeats: int, func_grad: bool = False, log=print) -> Row:
    with hf_mode(case, hf):
        return _run_case(case, hf, params, cfg, device, compile_mt5fn=compile_mt5fn, warmup=warmup,
                         repeats=repeats, func_grad=func_grad, log=log)


def _run_case(case: Case, hf: torch.nn.Module, params: dict, cfg: mt5fn.MT5Config, device: torch.device, *,
              compile_mt5fn: bool, warmup: int, repeats: int, func_grad: bool, log) -> Row:
    row = Row(case)
    runners = build_runners(case, hf, params, cfg, device, compile_mt5fn=compile_mt5fn, func_grad=func_grad)
    row.flops = measure.count_flops(runners.meta)
    fns = {"transformers": runners.hf, "mt5fn": runners.eager}
    if runners.func_grad is not None:
        fns["func.grad"] = runners.func_grad
    if runners.compiled is not None:
        _raise_compile_limits()
        start = time.perf_counter()
        measure.timed(runners.compiled, device)  # first call: trace + compile
        row.compile_seconds = time.perf_counter() - start
        fns["compiled"] = runners.compiled
    # The (untimed) memory measurement is each implementation's first warm-up call.
    for name, fn in fns.items():
        row.peak_bytes[name] = measure.peak_memory_bytes(fn, device)
    log(f"  {case.name}: memory measured, timing {repeats} interleaved rounds", flush=True)
    row.seconds = measure.interleaved_medians(fns, device, warmup=warmup, repeats=repeats)
    return row
