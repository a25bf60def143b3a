"""``mt5fn convert SRC DST``: re-save a checkpoint as safetensors (e.g. from ``.bin``).

Optionally changes the dtype and the shard size. Tokenizer files found in SRC
(``spiece.model``, ``tokenizer_config.json``, ...) are copied unchanged. The
write is atomic: on any error nothing is written and an existing DST is
left as it was.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="re-save a checkpoint as safetensors (dtype, sharding)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("src", metavar="SRC", help="checkpoint directory to read")
    parser.add_argument("dst", metavar="DST", help="directory to write (replaced atomically)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="convert the weights (default: keep the stored dtype)")
    parser.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                        help="largest shard, e.g. 500MB, 5GB, 2GiB or a byte count (default 5GB)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_pretrained, parse_size, save_checkpoint
    from ..tokenizer import TOKENIZER_FILES

    try:
        max_shard_size = parse_size(args.max_shard_size)
        if os.path.exists(args.dst) and not os.path.isdir(args.dst):
            raise NotADirectoryError(f"DST: {args.dst!r} exists and is a file, not a directory")
        cfg, params = load_pretrained(args.src, dtype=args.dtype)
        copies = {name: os.path.join(args.src, name) for name in TOKENIZER_FILES
                  if os.path.isfile(os.path.join(args.src, name))}
        save_checkpoint(params, cfg, args.dst, max_shard_size, copy_files=copies)
    except (OSError, ValueError, TypeError) as error:
        print(f"mt5fn convert: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.dst)}")
    return 0
