"""``mt5fn info PATH``: what a checkpoint directory holds, without running it.

Prints the configuration, the weight layout, parameter counts per component
(embedding, encoder, decoder, head), the dtype and whether the head is tied,
and the tokenizer when one is present. Weights are memory-mapped, so this is
quick even for large checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a Hugging Face checkpoint directory",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("path", metavar="PATH", help="checkpoint directory (config.json + weights)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_pretrained, weights_layout
    from ..model import flatten_params, num_params
    from ..tokenizer import SPIECE_NAME, Tokenizer

    try:
        cfg, params = load_pretrained(args.path)
        kind, file, sharded = weights_layout(args.path)
        tokenizer = (Tokenizer.from_pretrained(args.path)
                     if os.path.isfile(os.path.join(args.path, SPIECE_NAME)) else None)
    except (OSError, ValueError, TypeError) as error:
        print(f"mt5fn info: error: {error}", file=sys.stderr)
        return 1
    tied = "lm_head" not in params
    counts = {"embedding (shared)": params["shared"].numel(), "encoder": num_params(params["encoder"]),
              "decoder": num_params(params["decoder"]),
              "head (lm_head)": 0 if tied else params["lm_head"].numel()}
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in flatten_params(params).values()})
    out = [f"checkpoint: {os.path.abspath(args.path)}",
           f"weights: {kind}, {'sharded via ' if sharded else ''}{os.path.basename(file)}",
           "config:"]
    out += [f"  {key}: {value}" for key, value in cfg.to_hf().items() if key != "architectures"]
    out.append("parameters:")
    width = max(map(len, counts)) + 2
    for name, count in counts.items():
        note = "  (tied: shares the embedding)" if name.startswith("head") and tied else ""
        out.append(f"  {name:<{width}}{count:>15,}{note}")
    out.append(f"  {'total':<{width}}{sum(counts.values()):>15,}")
    out.append(f"dtype: {', '.join(dtypes)}")
    out.append(f"head: {'tied to the embedding' if tied else 'untied (own lm_head)'}")
    out.append(f"tokenizer: {SPIECE_NAME}, vocab_size {tokenizer.vocab_size} "
               f"({tokenizer.extra_ids} extra ids)" if tokenizer else "tokenizer: none")
    print("\n".join(out))
    return 0

