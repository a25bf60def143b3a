"""``mt5fn generate --model DIR "text" ...``: continue texts with a checkpoint, one output per line.

Tokenizes with the checkpoint's own tokenizer (``spiece.model`` in DIR),
decodes greedily, with beam search (``--num-beams``) or by sampling
(``--sample``, with ``--temperature``, ``--top-k``, ``--top-p``, ``--seed``),
and prints each decoded output on its own line, in input order
(``--num-return-sequences`` outputs per input, best first). Without texts on
the command line, each line of standard input is one text.

``--stream`` prints each output as it is generated, one input at a time
(greedy or sampled; ``mt5fn.stream``). ``--adapter DIR`` loads a PEFT LoRA
adapter folder onto the base model and merges it (``mt5fn.lora``) before
decoding (and before ``--quantize``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator

from ._checks import one_line as _one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate text with a checkpoint (greedy, beam, sampling)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="input texts (default: lines of stdin)")
    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory with spiece.model")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="most tokens per output (32)")
    parser.add_argument("--min-new-tokens", type=int, default=0, metavar="N", help="no EOS before N tokens (0)")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search with N beams (1: off)")
    parser.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                        help="beam score = log p / length ** A (1.0)")
    parser.add_argument("--early-stopping", choices=("true", "false", "never"), default="false",
                        help="when beam search stops (false)")
    parser.add_argument("--num-return-sequences", type=int, default=1, metavar="N",
                        help="outputs per input (beam search or sampling)")
    parser.add_argument("--sample", action="store_true", help="sample instead of taking the most likely token")
    parser.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (1.0)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample from the K best tokens")
    parser.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (0)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R", help="CTRL penalty (1.0)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N", help="ban repeated N-grams")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="texts decoded together (16)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="load the weights in this dtype (default: as stored)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8 weights (mt5fn.quantize: weight-only, per-channel scales), quantized on load")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--adapter", metavar="DIR", default=None,
                        help="a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) merged "
                             "into the model")
    parser.add_argument("--stream", action="store_true",
                        help="print each output as it is generated, one input at a time (greedy or sampling)")
    parser.add_argument("--profile", metavar="TRACE_DIR", default=None,
                        help="write a torch.profiler trace of decoding steps 3-5 to TRACE_DIR")
    parser.set_defaults(func=run)


def _batches(texts: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def _load(args: argparse.Namespace) -> tuple:
    """The model (``--adapter`` merged, then ``--quantize``), laid out for decoding."""
    from ..checkpoint import load_pretrained
    from ..decoding import prepare_decoding
    from ..lora import load_adapter, merge
    from ..quant import quantize

    if args.adapter is None:
        cfg, params = load_pretrained(args.model, dtype=args.dtype, device=args.device, quantize=args.quantize)
    else:
        cfg, params = load_pretrained(args.model, dtype=args.dtype, device=args.device)
        params = merge(params, load_adapter(args.adapter, params, cfg), cfg)
        if args.quantize is not None:
            params = quantize(params, cfg, args.quantize)
    # one decoding layout for every batch (as a CTranslate2 user holds a converted model)
    rows = 1 if args.stream else args.batch_size * max(args.num_beams, args.num_return_sequences)
    return cfg, prepare_decoding(params, cfg, rows=rows)


def _ticking(steps: Iterator, tick) -> Iterator:
    """``steps``, calling ``tick()`` after each (the profiler's step, as ``on_step`` in batch mode)."""
    for step in steps:
        tick()
        yield step


def _streamed(tokens: Iterator, tokenizer, out) -> None:
    """Print the text of ``tokens`` (an iterator of (1,) steps) as it grows, then a newline.

    Text is printed once it is stable: the decoded prefix must not change under later tokens (an
    incomplete UTF-8 byte sequence decodes to U+FFFD until its last byte arrives)."""
    ids: list[int] = []
    shown = ""
    for step in tokens:
        ids.append(int(step[0]))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text.startswith(shown) and not text.endswith("\ufffd"):
            out.write(text[len(shown):])
            out.flush()
            shown = text
    text = tokenizer.decode(ids, skip_special_tokens=True)
    out.write((text[len(shown):] if text.startswith(shown) else "") + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    import torch

    from ..decoding import GenerationConfig, decode_tokens, stream
    from ..tokenizer import Tokenizer
    from ..training import maybe_profile
    from ._checks import stdin_lines

    def fail(message: object) -> int:
        print(f"mt5fn generate: error: {_one_line(message)}", file=sys.stderr)
        return 1

    early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    options = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                   num_beams=args.num_beams, do_sample=args.sample, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, length_penalty=args.length_penalty, early_stopping=early,
                   num_return_sequences=args.num_return_sequences, repetition_penalty=args.repetition_penalty,
                   no_repeat_ngram_size=args.no_repeat_ngram_size)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        gc = GenerationConfig(**options)  # bad options fail before loading
        if args.stream and args.num_beams > 1:
            raise ValueError(f"--stream prints tokens as they are chosen, which beam search cannot "
                             f"(--num-beams {args.num_beams}); use greedy decoding or --sample")
        if args.stream and args.num_return_sequences > 1:
            raise ValueError(f"--stream prints one output per input; --num-return-sequences "
                             f"{args.num_return_sequences} needs the batch output (drop --stream)")
        tokenizer = Tokenizer.from_pretrained(args.model)
        cfg, params = _load(args)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        return fail(error)
    if len(tokenizer) > cfg.vocab_size:
        return fail(f"the tokenizer has {len(tokenizer)} tokens but the model only {cfg.vocab_size}")

    texts = args.texts if args.texts else stdin_lines()  # UTF-8 or a one-line error naming stdin
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    with maybe_profile(args.profile) as profile_step:
        if args.stream:
            for text in texts:
                encoded = tokenizer.batch_encode([text], padding=True)
                steps = stream(params, cfg, encoded["input_ids"].to(args.device),
                               encoded["attention_mask"].to(args.device), gc, generator=generator)
                _streamed(_ticking(steps, profile_step), tokenizer, sys.stdout)
            return 0
        for batch in _batches(texts, args.batch_size):
            encoded = tokenizer.batch_encode(batch, padding=True)
            ids = encoded["input_ids"].to(args.device)
            mask = encoded["attention_mask"].to(args.device)
            out = decode_tokens(params, cfg, ids, mask, gc, generator=generator, on_step=profile_step)
            for line in tokenizer.batch_decode(out.cpu(), skip_special_tokens=True):
                print(line, flush=True)
    return 0
