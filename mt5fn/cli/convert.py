"""``mt5fn convert SRC DST``: re-save a checkpoint as a safetensors directory (e.g. from ``.bin``).

SRC is a checkpoint directory or a single weights file (``t5xxl_fp16.safetensors``;
its config from ``--config`` or inferred from the shapes). Optionally changes
the dtype (``float8_e4m3fn`` writes scaled float8 projections that mt5fn and
ComfyUI read), the shard size, or keeps only the encoder. Tokenizer files
found in SRC (or ``--tokenizer DIR``) are copied unchanged; a tokenizer file
that is a link out of its folder is refused, never copied. The write is
atomic: on any error nothing is written and an existing DST is left as it was.

A DST ending in ``.gguf`` is written as llama.cpp's ``convert_hf_to_gguf.py``
writes it (``--dtype float32|float16|bfloat16|q8_0``; the tokenizer, from SRC's
folder or a GGUF SRC, goes into the file). A GGUF SRC is read like any checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._checks import one_line as _one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="re-save a checkpoint as safetensors (dtype, sharding)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("src", metavar="SRC", help="checkpoint directory or weights file to read")
    parser.add_argument("dst", metavar="DST", help="directory to write (replaced atomically)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "float8_e4m3fn", "q8_0"),
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


def _is_gguf(file: str) -> bool:
    with open(file, "rb") as handle:
        return handle.read(4) == b"GGUF"


def _to_gguf(args: argparse.Namespace) -> int:
    from ..checkpoint import load_pretrained, save_gguf_file
    from ..tokenizer import Tokenizer, has_tokenizer

    if args.dtype == "float8_e4m3fn":
        raise ValueError("--dtype float8_e4m3fn has no GGUF form; use float32, float16, bfloat16 or q8_0")
    source = args.tokenizer or args.src
    if os.path.isdir(source) and has_tokenizer(source):
        tokenizer = Tokenizer.from_pretrained(source)
    elif os.path.isfile(source) and _is_gguf(source):
        tokenizer = Tokenizer.from_pretrained(source)
    else:
        tokenizer = None
    dtype = "float32" if args.dtype in (None, "q8_0") else args.dtype
    cfg, params = load_pretrained(args.src, dtype=None if args.dtype is None and not _is_gguf_path(args.src)
                                  else dtype, encoder_only=args.encoder_only, config=args.config)
    save_gguf_file(params, cfg, args.dst, args.dtype, tokenizer)
    print(f"wrote {os.path.abspath(args.dst)}")
    return 0


def _is_gguf_path(path: str) -> bool:
    return os.path.isfile(path) and _is_gguf(path)


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
        if args.dst.endswith(".gguf"):
            return _to_gguf(args)
        if args.dtype == "q8_0":
            raise ValueError("--dtype q8_0 writes a GGUF file: give a DST ending in .gguf")
        dtype = None if args.dtype == "float8_e4m3fn" else args.dtype
        if dtype is None and os.path.isfile(args.src) and _is_gguf(args.src):
            dtype = "float32"  # Q8_0 leaves have no safetensors form: dequantize (exactly) to float32
        cfg, params = load_pretrained(args.src, dtype=dtype, encoder_only=args.encoder_only, config=args.config)
        save_checkpoint(params, cfg, args.dst, max_shard_size, copy_files=copies,
                        dtype=args.dtype if args.dtype == "float8_e4m3fn" else None)
    except (OSError, ValueError, TypeError) as error:
        print(f"mt5fn convert: error: {_one_line(error)}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.dst)}")
    return 0
