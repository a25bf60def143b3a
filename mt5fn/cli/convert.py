"""``mt5fn convert SRC DST``: re-save a checkpoint as a safetensors directory (e.g. from ``.bin``).

SRC is a checkpoint directory or a single weights file (``t5xxl_fp16.safetensors``;
its config from ``--config`` or inferred from the shapes). Optionally changes
the dtype (``float8_e4m3fn`` writes scaled float8 projections that mt5fn and
ComfyUI read), the shard size, or keeps only the encoder. Tokenizer files
found in SRC (or ``--tokenizer DIR``) are copied unchanged; a tokenizer file
that is a link out of its folder is refused, never copied. The write is
atomic: on any error nothing is written and an existing DST is left as it was.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="re-save a checkpoint as safetensors (dtype, sharding)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("src", metavar="SRC", help="checkpoint directory or weights file to read")
    parser.add_argument("dst", metavar="DST", help="directory to write (replaced atomically)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "float8_e4m3fn"),
                        help="convert the weights (default: keep the stored dtype)")
    parser.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                        help="largest shard, e.g. 500MB, 5GB, 2GiB or a byte count (default 5GB)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="keep the embedding and the encoder only (a T5EncoderModel folder)")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="config.json or preset name for SRC (default: SRC's own, or inferred from the shapes)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="copy the tokenizer files of DIR (default: those of SRC when it is a directory)")
    parser.set_defaults(func=run)


def _tokenizer_files(folder: str) -> dict[str, str]:
    from ..checkpoint import checked_path
    from ..tokenizer import TOKENIZER_FILES

    return {name: checked_path(folder, name) for name in TOKENIZER_FILES
            if os.path.isfile(os.path.join(folder, name))}


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_pretrained, parse_size, save_checkpoint

    try:
        max_shard_size = parse_size(args.max_shard_size)
        if os.path.exists(args.dst) and not os.path.isdir(args.dst):
            raise NotADirectoryError(f"DST: {args.dst!r} exists and is a file, not a directory")
        if args.tokenizer is not None and not os.path.isdir(args.tokenizer):
            raise NotADirectoryError(f"--tokenizer: {args.tokenizer!r} is not a directory")
        source = args.tokenizer or (args.src if os.path.isdir(args.src) else None)
        copies = _tokenizer_files(source) if source else {}  # checked before anything is loaded
        dtype = None if args.dtype == "float8_e4m3fn" else args.dtype
        cfg, params = load_pretrained(args.src, dtype=dtype, encoder_only=args.encoder_only, config=args.config)
        save_checkpoint(params, cfg, args.dst, max_shard_size, copy_files=copies,
                        dtype=args.dtype if args.dtype == "float8_e4m3fn" else None)
    except (OSError, ValueError, TypeError) as error:
        print(f"mt5fn convert: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.dst)}")
    return 0
