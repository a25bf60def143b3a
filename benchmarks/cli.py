"""``python -m benchmarks``: mt5fn against transformers, same weights, same process.

Prints the main table (teacher-forced forward, one training step, encoder-only)
and the scaling table (source length and batch size), with the machine's
description and its measured matmul peak. See ``benchmarks/measure.py`` for
how time, memory and FLOPs are measured.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from . import measure, report
from .cases import default_cases, estimated_bytes
from .models import MissingDependency, load_both, model_config
from .run import run_case

QUICK_CASES = ("forward", "train", "encoder")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UsageError(ValueError):
    """Bad arguments: the message names the argument and the value."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="forward, train and encoder only, one timed round, no compilation (< 2 minutes)")
    p.add_argument("--cases", type=lambda s: [c.strip() for c in s.split(",") if c.strip()], default=None,
                   help="comma-separated case names (see --list); default: all")
    p.add_argument("--list", action="store_true", help="list the case names and exit")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="default float32")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5, --quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="extra warm-up calls (default 1, --quick 0)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--model", default="mt5-small",
                   help="an MT5Config.preset name, or 'tiny' to smoke-test the harness (default mt5-small)")
    p.add_argument("--batch", type=int, default=8, help="batch of forward/train (default 8)")
    p.add_argument("--source-length", type=int, default=128, help="source tokens (default 128)")
    p.add_argument("--target-length", type=int, default=32, help="target tokens (default 32)")
    p.add_argument("--encoder-batch", type=int, default=32, help="batch of the encoder case (default 32)")
    p.add_argument("--scale-lengths", type=_int_list, default=[128, 512, 2048],
                   help="source lengths of the scaling table (batch 1)")
    p.add_argument("--scale-batches", type=_int_list, default=[1, 8, 32],
                   help="batch sizes of the scaling table")
    p.add_argument("--long-length", type=int, default=4096, help="source tokens of train-long (default 4096)")
    p.add_argument("--checkpoint-length", type=int, default=2048,
                   help="source tokens of the activation-checkpointing pair train-sN / train-sN-ckpt (default 2048)")
    p.add_argument("--func-grad", action="store_true",
                   help="train cases: also time torch.func.grad_and_value of the same loss (peak memory too)")
    return p


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device must be cpu or cuda, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text!r}: this torch build sees no CUDA device")
    return device


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value}")


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve(args: argparse.Namespace):
    """Validate the arguments; return (device, dtype, model config, selected cases)."""
    device = _device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("--dtype float16 needs --device cuda (CPU half matmuls are not a meaningful benchmark)")
    if dtype != torch.float32 and args.cases and any(name == "train-bf16" for name in args.cases):
        raise UsageError("train-bf16 is bfloat16 autocast over float32 weights: run it with --dtype float32")
    for name in ("threads", "repeats", "batch", "source_length", "target_length", "encoder_batch", "long_length",
                 "checkpoint_length"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.warmup is not None and args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    for name in ("scale_lengths", "scale_batches"):
        for value in getattr(args, name):
            _positive("--" + name.replace("_", "-") + " entries", value)
    try:
        cfg = model_config(args.model)
    except (KeyError, ValueError) as error:
        raise UsageError(f"--model: {error}") from None
    cases = default_cases(batch=args.batch, source=args.source_length, target=args.target_length,
                          encoder_batch=args.encoder_batch, scale_lengths=args.scale_lengths,
                          scale_batches=args.scale_batches, long_length=args.long_length,
                          checkpoint_length=args.checkpoint_length)
    names = args.cases or (list(QUICK_CASES) if args.quick else list(cases))
    if dtype != torch.float32 and not args.cases:
        names = [name for name in names if not cases[name].autocast]  # autocast is a float32-weights case
    unknown = [name for name in names if name not in cases]
    if unknown:
        raise UsageError(f"unknown case(s) {', '.join(map(repr, unknown))}; known cases: {', '.join(cases)}")
    selected = [cases[name] for name in dict.fromkeys(names)]
    limit = _available_bytes(device)
    for case in [] if args.list else selected:
        need = estimated_bytes(case, cfg, torch.finfo(dtype).bits // 8)
        if need > limit:
            raise UsageError(f"case {case.name!r} ({case.shape}, {case.kind}) needs about {need / 2**30:.1f} GiB; "
                             f"the {device.type} has {limit / 2**30:.1f} GiB: choose smaller sizes")
    return device, dtype, cfg, selected


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        device, dtype, cfg, selected = resolve(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        for case in selected:
            print(f"{case.name:18s} {case.kind:8s} {case.shape}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    compile_mt5fn = not (args.no_compile or args.quick)
    try:
        loaded = load_both(args.model, device, dtype)
    except MissingDependency as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    peak = measure.matmul_peak_flops(device, dtype)
    print(f"machine: {report.machine_description(device, torch.get_num_threads())}")
    print(f"model: {args.model} ({cfg.model_type}, vocab {cfg.vocab_size}, d_model {cfg.d_model}, "
          f"{cfg.num_layers}+{cfg.num_decoder_layers} layers), {args.dtype} on {device}; "
          f"parity max|logits diff| {loaded.parity:.2e} (max|logit| {loaded.scale:.1f})")
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s; {warmup} warm-up + {repeats} interleaved timed rounds, "
          f"median", flush=True)
    rows = [run_case(case, loaded.hf, loaded.params, loaded.cfg, device, compile_mt5fn=compile_mt5fn,
                     warmup=warmup, repeats=repeats, func_grad=args.func_grad) for case in selected]
    for group, title in (("main", "Main cases"), ("long", "Long inputs (train step, batch 1)"),
                         ("scaling", "Scaling (forward, no grad)")):
        group_rows = [row for row in rows if row.case.group == group]
        if group_rows:
            print(f"\n{title}\n\n{report.table(group_rows, peak)}")
    note = report.compile_note(rows)
    if note:
        print(f"\n{note}")
    return 0
