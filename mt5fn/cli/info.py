"""``mt5fn info PATH``: what a checkpoint holds, without running it.

PATH is a checkpoint directory (a full model or a transformers encoder-only
folder) or a single weights file. Prints the configuration (inferred from the
shapes for a file without one), the weight layout, parameter counts per
component (embedding, encoder, decoder, head), the dtype, whether the head is
tied, and the tokenizer when one is present. Weights are memory-mapped, so
this is quick even for large checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ._checks import one_line as _one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a checkpoint directory or weights file",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("path", metavar="PATH", help="checkpoint directory (config.json + weights) or weights file")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="for a single file: a config.json or preset name (default: inferred from the shapes)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import ENCODER_CLASSES, describe_gguf, load_pretrained, weights_layout
    from ..model import flatten_params, num_params
    from ..tokenizer import Tokenizer, has_tokenizer

    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg, params = load_pretrained(args.path, config=args.config)
        notes = [str(w.message) for w in caught if "inferred from the tensor shapes" in str(w.message)
                 or "the format does not carry" in str(w.message)]
        gguf = describe_gguf(args.path)
        if gguf:
            layout = gguf
        elif os.path.isdir(args.path):
            kind, file, sharded = weights_layout(args.path)
            layout = f"{kind}, {'sharded via ' if sharded else ''}{os.path.basename(file)}"
        else:
            layout = f"single file {os.path.basename(args.path)}"
        tokenizer = Tokenizer.from_pretrained(args.path) if (os.path.isdir(args.path) and has_tokenizer(
            args.path)) or (gguf and os.path.isfile(args.path)) else None
    except (OSError, ValueError, TypeError) as error:
        print(f"mt5fn info: error: {_one_line(error)}", file=sys.stderr)
        return 1
    encoder_only = "decoder" not in params
    tied = "lm_head" not in params
    counts = {"embedding (shared)": params["shared"].numel(), "encoder": num_params(params["encoder"])}
    if not encoder_only:
        counts.update({"decoder": num_params(params["decoder"]),
                       "head (lm_head)": 0 if tied else num_params({"lm_head": params["lm_head"]})})
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in flatten_params(params).values()})
    model = (f"encoder-only ({ENCODER_CLASSES[cfg.model_type]}: shared + encoder; no decoder)" if encoder_only
             else "encoder-decoder")
    out = [f"checkpoint: {os.path.abspath(args.path)}", f"model: {model}", f"weights: {layout}", "config:"]
    if notes:
        source = "the GGUF metadata and tensor shapes, with the assumptions its warning names" if gguf else \
            "inferred from the tensor shapes"
        out.insert(3, f"config source: {source} (pass --config to override)")
    out += [f"  {key}: {value}" for key, value in cfg.to_hf().items() if key != "architectures"]
    out.append("parameters:")
    width = max(map(len, counts)) + 2
    for name, count in counts.items():
        note = "  (tied: shares the embedding)" if name.startswith("head") and tied else ""
        out.append(f"  {name:<{width}}{count:>15,}{note}")
    out.append(f"  {'total':<{width}}{sum(counts.values()):>15,}")
    out.append(f"dtype: {', '.join(dtypes)}")
    if not encoder_only:
        out.append(f"head: {'tied to the embedding' if tied else 'untied (own lm_head)'}")
    out.append(f"tokenizer: {tokenizer.kind}, vocab_size {tokenizer.vocab_size} "
               f"({tokenizer.extra_ids} extra ids)" if tokenizer else "tokenizer: none")
    print("\n".join(out))
    return 0
