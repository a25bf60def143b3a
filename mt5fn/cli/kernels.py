"""``mt5fn kernels``: the weight-leaf forms this machine's kernel choice picked, and where they are kept.

Decoding layouts time the candidate forms of each large weight on the running
machine and keep the fastest (``mt5fn.kernels.kernel_choice``). This command
prints the mode (``MT5FN_KERNEL_CACHE``), the cache file, this machine's
signature and every choice made so far on it; with ``--model`` it first lays
out that model's decoder for ``--rows`` rows per step, measuring what is not
known yet.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kernels", help="show (and with --model, make) this machine's kernel choices",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="a checkpoint whose decoding layout to choose first (prepare_decoding)")
    parser.add_argument("--rows", type=int, default=1, metavar="N",
                        help="rows per decoding step (batch x beams) for --model (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checks import check_int
    from ..kernels import kernel_choice

    check_int("--rows", args.rows, 1)
    mode = kernel_choice.mode()
    if args.model is not None:
        from ..checkpoint import load_pretrained
        from ..decoding import prepare_decoding

        cfg, params = load_pretrained(args.model)
        prepare_decoding(params, cfg, rows=args.rows)
    machine = kernel_choice.machine(torch.device("cpu"))
    out = [f"mode: {mode} ({kernel_choice.ENV_VAR})",
           f"cache file: {kernel_choice.cache_file() if mode == 'on' else 'not used in this mode'}",
           f"this machine: {machine}", "choices (product -> form):"]
    choices = kernel_choice.choices()
    for product, form in choices.items():
        here = product.startswith(machine + "|")
        what = product[len(machine) + 1:] if here else product
        out.append(f"  {what} -> {form}" + ("" if here else "  (another machine)"))
    if not choices:
        out.append("  none yet (they are made when a decoding layout is prepared)")
    print("\n".join(out))
    return 0
