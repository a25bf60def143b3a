"""``mt5fn encode --model PATH --out emb.safetensors "text" ...``: text embeddings from a T5 encoder.

The text-encoder step of image and video models. PATH is a checkpoint
directory (full or encoder-only; only the encoder is read) or a single
weights file (with ``--tokenizer DIR``). Without texts on the command line,
each line of standard input is one text. Writes a safetensors file with
``embeddings`` (N, L, d_model) -- the encoder's last hidden state, padded
positions set to zero -- ``attention_mask`` (N, L) and ``input_ids`` (N, L),
in input order; L is ``--max-length`` when given (longer texts are cut,
keeping ``</s>``), else the longest text. Texts are batched by length, so
padding costs little; masked attention makes each row independent of the
others.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ._checks import one_line as _one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("encode", help="embed texts with a T5 encoder (safetensors output)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="input texts (default: lines of stdin)")
    parser.add_argument("--model", required=True, metavar="PATH", help="checkpoint directory or weights file")
    parser.add_argument("--out", required=True, metavar="FILE", help="safetensors file to write (replaced atomically)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer folder (default: --model)")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="config.json or preset name for a single weights file (default: inferred)")
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="tokens per text, padded or cut to N (default: the longest text)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="compute in this dtype (default: as stored)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="texts encoded together (16)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.set_defaults(func=run)


def _stdin_texts() -> list[str]:
    texts = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as error:
            raise ValueError(f"stdin: line {number} is not UTF-8 text ({error.reason} at byte {error.start})") \
                from None
    return texts


def _check_out(out: str) -> None:
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out: {out!r} is a directory; give a file name like emb.safetensors")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: the folder {parent!r} does not exist")


def run(args: argparse.Namespace) -> int:
    def fail(message: object) -> int:
        print(f"mt5fn encode: error: {_one_line(message)}", file=sys.stderr)
        return 1

    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.max_length is not None and args.max_length < 1:
            raise ValueError(f"--max-length must be >= 1, got {args.max_length}")
        _check_out(args.out)
        if not os.path.exists(args.model):
            raise FileNotFoundError(f"--model: no such checkpoint directory or weights file {args.model!r}")
        tokenizer_dir = args.tokenizer or args.model
        if not os.path.isdir(tokenizer_dir) and not tokenizer_dir.endswith(".gguf"):  # GGUF holds its vocabulary
            raise ValueError(f"--model {args.model!r} is a single weights file; pass --tokenizer DIR (a folder "
                             "with tokenizer.json, spiece.model or a ByT5 tokenizer_config.json)")
        texts = args.texts if args.texts else _stdin_texts()
        if not texts:
            raise ValueError("no texts: give them as arguments or as lines on stdin")
        import torch

        from ..checkpoint import atomic_write_bytes, load_pretrained
        from ..tokenizer import Tokenizer

        device = torch.device(args.device)
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
        encoded = tokenizer.batch_encode(texts, padding=False, return_tensors=None,
                                         truncation=args.max_length is not None, max_length=args.max_length)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg, params = load_pretrained(args.model, dtype=args.dtype, device=device, encoder_only=True,
                                          config=args.config)
        for warning in caught:
            print(f"mt5fn encode: note: {warning.message}", file=sys.stderr)
        if len(tokenizer) > cfg.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model only {cfg.vocab_size}")
        _check_sizes(args, cfg, params, encoded["input_ids"])
        result = _encode_all(params, cfg, encoded["input_ids"], tokenizer.pad_token_id, args.batch_size,
                             args.max_length, device)
        from safetensors.torch import save

        metadata = {"model": os.path.abspath(args.model), "padding": "embeddings are zero where attention_mask is 0"}
        atomic_write_bytes(args.out, save(result, metadata=metadata))
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        return fail(error)
    n, length, width = result["embeddings"].shape
    print(f"wrote {os.path.abspath(args.out)}: embeddings ({n}, {length}, {width}) {result['embeddings'].dtype}")
    return 0


def _check_sizes(args: argparse.Namespace, cfg, params: dict, rows: list[list[int]]) -> None:
    """``--max-length`` and ``--batch-size`` against memory before any batch runs: the (N, L, d) output,
    its ids and mask, and the encoder on one batch of the longest rows (the library's pre-flight)."""
    import torch

    from ..checks import preflight

    n, length = len(rows), args.max_length or max(len(row) for row in rows)
    width, batch = max(len(row) for row in rows), min(args.batch_size, n)
    try:
        preflight.check_buffers("encode", f"--max-length {length} for {n} text(s)", [
            ("the embeddings", (n, length, cfg.d_model), params["shared"].element_size()),
            ("input_ids and attention_mask", (2, n, length), 8)], "cpu")
        preflight.check_encode(params, cfg, torch.empty(batch, width, dtype=torch.long, device="meta"), True,
                               call="encode")
    except ValueError as error:
        raise ValueError(f"--max-length / --batch-size: {error}") from None


def _encode_all(params: dict, cfg, rows: list[list[int]], pad_id: int, batch_size: int, max_length: int | None,
                device) -> dict:
    """Encoder outputs for every row, batched by length, zero at padding, in input order."""
    import torch
    from tqdm import tqdm

    from ..model import encode

    length = max_length or max(len(row) for row in rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (N, L)
    mask = torch.zeros(len(rows), length, dtype=torch.long)  # (N, L)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    embeddings = None
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    with torch.inference_mode(), tqdm(total=len(rows), unit="text", file=sys.stderr, disable=len(batches) <= 1,
                                      desc="mt5fn encode") as bar:
        for batch in batches:
            width = max(len(rows[i]) for i in batch)
            index = torch.tensor(batch)
            hidden = encode(params, cfg, ids[index, :width].to(device), mask[index, :width].to(device))  # (b, w, d)
            hidden = hidden.masked_fill(mask[index, :width, None].to(device) == 0, 0.0)  # padding -> exact zeros
            if embeddings is None:
                embeddings = torch.zeros(len(rows), length, hidden.shape[-1], dtype=hidden.dtype)  # (N, L, d)
            embeddings[index, :width] = hidden.cpu()
            bar.update(len(batch))
    return {"embeddings": embeddings.contiguous(), "attention_mask": mask, "input_ids": ids}
