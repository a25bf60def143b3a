"""``mt5fn demo``: train a small multilingual mT5 from scratch on this machine (nothing downloaded),
print its held-out accuracy with greedy and beam-search examples, save a checkpoint transformers
loads and a loss-curve PNG."""

from __future__ import annotations

import argparse
import sys

from ._checks import one_line as _one_line


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="main job: train a small multilingual mT5 from scratch (CPU, minutes)",
                                   description=__doc__)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: enough for >= 90%%)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data split, initialisation and order")
    parser.add_argument("--out", default="mt5fn-demo", help="output directory (default: ./mt5fn-demo)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import STEPS, run_demo
    from ..training import TrainError

    try:
        run_demo(steps=STEPS if args.steps is None else args.steps, seed=args.seed, out=args.out,
                 echo=lambda message: print(message, flush=True))
    except (RuntimeError, ValueError, TrainError) as error:
        print(f"mt5fn demo: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0
