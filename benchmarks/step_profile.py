"""Where a decoding step's time goes: each product against its weight-streaming floor.

    python benchmarks/step_profile.py [--threads N] [--rows 1] [--precisions fp32,bf16,int8] [--compile]

A decoding step at a few rows reads every decoder weight and the head once,
so its floor is those bytes over the machine's read bandwidth. This script
takes the held tree ``prepare_decoding`` makes for ``--rows`` (the forms the
kernel choice measured fastest here), times each distinct product of one step
alone (``kernels.linear`` on the leaf, medians) with the weight cold -- cycling
through copies of the leaf that together outgrow any cache, as a step's 20+
weights do -- and compares it with the time its bytes need at the bandwidth
measured in the same run. The step
itself is timed as ``generate`` of 32 tokens divided by 32 (eager, and with
``--compile`` the compiled step too); what the products do not explain is
the step's own work (norms, attention, the cache, the token choice) and its
per-operator overhead. Same random mt5-small-shaped model as
``benchmarks/generate.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import torch

import mt5fn
from mt5fn.kernels import linear, linear_form, linear_shape

try:  # run as a script or as a module of the benchmarks package
    from benchmarks.generate import NEW_TOKENS, SOURCE_LENGTH, bandwidth_gb_s, cpu_name, mt5_small_random
except ImportError:
    from generate import NEW_TOKENS, SOURCE_LENGTH, bandwidth_gb_s, cpu_name, mt5_small_random


def leaf_bytes(leaf) -> int:
    """Bytes a product streams from a weight leaf of any form."""
    tensors = [leaf] if isinstance(leaf, torch.Tensor) else [t for v in leaf.values()
                                                             for t in (v if isinstance(v, list) else [v])]
    return sum(t.numel() * t.element_size() for t in tensors)


def step_products(held: dict) -> list[tuple[str, object, int]]:
    """(name, leaf, calls per step) of every product one decoding step runs (cross K/V excluded: once per input)."""
    products: Counter = Counter()
    leaves: dict[str, object] = {}
    for block in held["decoder"]["blocks"]:
        for group, names in (("self_attn", ("qkv", "q", "k", "v", "o")), ("cross_attn", ("q", "o")),
                             ("mlp", ("wi_01", "wi_0", "wi_1", "wi", "wo"))):
            for name in names:
                if name in block[group]:
                    leaf = block[group][name]
                    out, inp = linear_shape(leaf)
                    key = f"{group}.{name} [{out}, {inp}] {linear_form(leaf)}"
                    products[key] += 1
                    leaves.setdefault(key, leaf)
    head = held["lm_head"]
    out, inp = linear_shape(head)
    key = f"lm_head [{out}, {inp}] {linear_form(head)}"
    products[key], leaves[key] = 1, head
    return [(key, leaves[key], count) for key, count in products.items()]


COLD_BYTES = 1 << 29  # copies of a small leaf cycled through per timing: 512 MiB, more than any cache


def clone_leaf(leaf):
    if isinstance(leaf, torch.Tensor):
        return leaf.clone()
    return {k: [b.clone() for b in v] if isinstance(v, list) else v.clone() for k, v in leaf.items()}


def cold_seconds(x: torch.Tensor, leaf, repeats: int) -> float:
    """Median seconds of ``linear(x, leaf)`` with the weight coming from memory, not cache."""
    copies = [leaf] + [clone_leaf(leaf) for _ in range(max(0, -(-COLD_BYTES // leaf_bytes(leaf)) - 1))]
    sweep = max(1, repeats // len(copies)) if len(copies) < repeats else 1

    def call():
        for _ in range(sweep):
            for copy in copies:
                linear(x, copy)
    return median_seconds(call, max(3, repeats // (len(copies) * sweep))) / (len(copies) * sweep)


def median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tree_of(precision: str, cfg: mt5fn.MT5Config, params: dict) -> tuple[dict, torch.dtype]:
    if precision == "bf16":
        return mt5fn.tree_map(lambda t: t.to(torch.bfloat16), params), torch.bfloat16
    if precision == "int8":
        tree = mt5fn.quantize(params, cfg, "int8")
        return tree, tree["lm_head"]["scale"].dtype
    return params, torch.float32


def profile(precision: str, cfg: mt5fn.MT5Config, params: dict, rows: int, bandwidth: float, compile: bool,
            repeats: int) -> None:
    tree, dtype = tree_of(precision, cfg, params)
    held = mt5fn.prepare_decoding(tree, cfg, rows=rows)
    probe = torch.randn(rows, cfg.d_model, generator=torch.Generator().manual_seed(0)).to(dtype)
    sources = torch.randint(3, cfg.vocab_size, (rows, SOURCE_LENGTH), generator=torch.Generator().manual_seed(0))
    print(f"\n{precision}, {rows} row(s) per step ({cpu_name()}, {torch.get_num_threads()} threads, "
          f"{bandwidth:.1f} GB/s)")
    print("| product | form | calls/step | ms/call | floor ms/call | x floor | ms/step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    total = total_floor = 0.0
    with torch.inference_mode():
        for name, leaf, count in step_products(held):
            width = linear_shape(leaf)[1]
            x = probe if width == cfg.d_model else torch.randn(rows, width).to(dtype)
            seconds = cold_seconds(x, leaf, repeats)
            floor = leaf_bytes(leaf) / (bandwidth * 1e9)
            total, total_floor = total + seconds * count, total_floor + floor * count
            label, form = name.rsplit(" ", 1)
            print(f"| {label} | {form} | {count} | {seconds * 1e3:.3f} | {floor * 1e3:.3f} | {seconds / floor:.2f} | "
                  f"{seconds * count * 1e3:.2f} |")
    steps = {"eager": False, **({"compiled": True} if compile else {})}
    for label, compiled in steps.items():
        def call():
            mt5fn.generate(held, cfg, sources, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                           compile=compiled)
        step = median_seconds(call, max(3, repeats // 5)) / NEW_TOKENS
        print(f"| **step, {label}** (generate / {NEW_TOKENS}) | | | | {total_floor * 1e3:.2f} | "
              f"{step / total_floor:.2f} | {step * 1e3:.2f} |")
        print(f"| of which products / the rest | | | | | | {total * 1e3:.2f} / {(step - total) * 1e3:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    if set(precisions) - {"fp32", "bf16", "int8"} or args.rows < 1 or args.threads < 1 or args.repeats < 1:
        parser.error("precisions are fp32, bf16, int8; --rows, --threads and --repeats are at least 1")
    torch.set_num_threads(args.threads)
    cfg, params = mt5_small_random()
    bandwidth = bandwidth_gb_s()
    for precision in precisions:
        profile(precision, cfg, params, args.rows, bandwidth, args.compile, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
