"""Markdown tables of the results, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import subprocess

import torch

from .run import Row

MiB = 1024 * 1024


def machine_description(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or "unknown CPU"
    cores = os.cpu_count()
    return (f"{name}; {cores} logical CPUs, {threads} torch threads; torch {torch.__version__}; "
            f"Python {platform.python_version()}; {platform.system()} {platform.machine()}")


def _cpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f}"


def _gflops(flops: int, seconds: float | None, peak: float) -> str:
    if not seconds or not flops:
        return "-"
    rate = flops / seconds
    return f"{rate / 1e9:.0f} ({100 * rate / peak:.0f}%)"


def _time_ratio(a: float | None, b: float | None) -> str:
    """mt5fn's time as a multiple of transformers' (the issue's "<= 0.8x" measure)."""
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(rows: list[Row], peak_flops: float) -> str:
    """One row per case; the ``func.grad`` columns appear when a row has them (``--func-grad``)."""
    extra = any("func.grad" in row.seconds for row in rows)
    header = ("| case | shape | transformers s | mt5fn s | compiled s | speed-up eager | speed-up compiled "
              "| mt5fn time / transformers | peak MiB transformers | peak MiB mt5fn | peak MiB compiled "
              + ("| func.grad s | peak MiB func.grad " if extra else "")
              + "| GFLOP | GFLOP/s (% of peak) transformers | mt5fn | compiled |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        s, m = row.seconds, row.peak_bytes
        t_hf, t_fn, t_c = s.get("transformers"), s.get("mt5fn"), s.get("compiled")
        func = f"| {_fmt_s(s.get('func.grad'))} | {_mib(m.get('func.grad'))} " if extra else ""
        lines.append(
            f"| {row.case.name} | {row.case.shape} | {_fmt_s(t_hf)} | {_fmt_s(t_fn)} | {_fmt_s(t_c)} "
            f"| {_ratio(t_hf, t_fn)} | {_ratio(t_hf, t_c)} | {_time_ratio(t_fn, t_hf)} | {_mib(m.get('transformers'))} "
            f"| {_mib(m.get('mt5fn'))} | {_mib(m.get('compiled'))} {func}| {row.flops / 1e9:.1f} "
            f"| {_gflops(row.flops, t_hf, peak_flops)} | {_gflops(row.flops, t_fn, peak_flops)} "
            f"| {_gflops(row.flops, t_c, peak_flops)} |")
    return "\n".join(lines)


def compile_note(rows: list[Row]) -> str:
    parts = [f"{row.case.name} {row.compile_seconds:.0f} s" for row in rows if row.compile_seconds is not None]
    return "first-call compile time: " + ", ".join(parts) if parts else ""
