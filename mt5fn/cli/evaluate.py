"""``mt5fn evaluate``: the held-out evaluation of ``mt5fn train --eval-data``, on its own.

    mt5fn evaluate --model run/best --data dev.jsonl --mode supervised             # loss, exact match, BLEU, chrF
    mt5fn evaluate --model ft/ --data dev.tsv --num-beams 4 --out eval.json --predictions preds.txt
    mt5fn evaluate --model base/ --adapter lora-run/best --data dev.jsonl           # a PEFT adapter on a base

Prints one JSON object (``eval_loss``, and unless ``--no-generate``
``eval_exact_match``, ``eval_bleu``, ``eval_chrf``) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._checks import one_line as _one_line


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="held-out loss, exact match, BLEU and chrF of a checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="DIR", help="Hugging Face checkpoint directory "
                        "(with its tokenizer), or a run's OUT/best / OUT/latest pointer")
    parser.add_argument("--adapter", metavar="DIR", help="a PEFT LoRA adapter folder to apply to --model")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: the model's, else the "
                        "adapter's)")
    parser.add_argument("--data", action="append", required=True, metavar="FILE",
                        help="evaluation data in any mt5fn train --data format; repeat for several")
    parser.add_argument("--mode", choices=("span", "supervised"), default="supervised",
                        help="supervised: (input, target) pairs (default); span: span-corruption loss on text")
    header = parser.add_mutually_exclusive_group()
    header.add_argument("--tsv-header", dest="tsv_header", action="store_const", const=True, default=None)
    header.add_argument("--no-tsv-header", dest="tsv_header", action="store_const", const=False)
    parser.add_argument("--input-field", default="input")
    parser.add_argument("--target-field", default="target")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--prefix", default="", help="prepended to every input (as in training)")
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    parser.add_argument("--max-input-length", type=int, default=512)
    parser.add_argument("--max-target-length", type=int, default=128)
    parser.add_argument("--no-generate", action="store_true", help="loss only (no decoding)")
    parser.add_argument("--num-beams", type=int, default=1, help="beams (default 1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: --max-target-length")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="span mode: seeds the noise")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--out", metavar="FILE", help="also write the metrics to this JSON file")
    parser.add_argument("--predictions", metavar="FILE", help="write the generated outputs, one per line")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"mt5fn evaluate: error: {_one_line(message)}", file=sys.stderr)
    return 2


def _positive(args: argparse.Namespace) -> str | None:
    for name, least in (("num_beams", 1), ("batch_size", 1), ("max_input_length", 2), ("max_target_length", 2)):
        value = getattr(args, name)
        if value < least:
            return f"--{name.replace('_', '-')} must be an int >= {least}, got {value}"
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return f"--max-new-tokens must be an int >= 1, got {args.max_new_tokens}"
    if args.mode == "span" and not args.no_generate:
        return "--mode span has no reference texts to compare generations with: pass --no-generate"
    return None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import atomic_write_text, load_pretrained
    from ..data import DataError, Fields
    from ..model import tree_map
    from ..tokenizer import Tokenizer
    from ..training import build_eval_set, evaluate, resolve_checkpoint, resolve_device

    problem = _positive(args)
    if problem:
        return _fail(problem)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return _fail(str(error))
    args.model = resolve_checkpoint(args.model)  # OUT/best and OUT/latest name a step directory
    args.adapter = resolve_checkpoint(args.adapter) if args.adapter else None
    try:
        cfg, params = load_pretrained(args.model)
    except (OSError, ValueError, KeyError) as error:
        return _fail(f"--model: {error}")
    try:
        sources = [args.tokenizer] if args.tokenizer else [args.model] + ([args.adapter] if args.adapter else [])
        tokenizer, problems = None, []
        for source in sources:
            try:
                tokenizer = Tokenizer.from_pretrained(source)
                break
            except FileNotFoundError as error:
                problems.append(str(error))
        if tokenizer is None:
            return _fail(f"no tokenizer found ({'; '.join(problems)}); pass --tokenizer DIR")
    except (OSError, ValueError) as error:
        return _fail(f"tokenizer: {error}")
    params = tree_map(lambda t: t.to(device), params)
    if args.adapter:
        try:
            from ..lora import apply, load_adapter

            params = apply(params, tree_map(lambda t: t.to(device), load_adapter(args.adapter, params, cfg)), cfg)
        except (OSError, ValueError, KeyError) as error:
            return _fail(f"--adapter: {error}")
    fields = Fields(args.mode, args.input_field, args.target_field, args.text_field, args.tsv_header)
    try:
        eval_set, records = build_eval_set(tuple(args.data), fields, tokenizer, max_input_length=args.max_input_length,
                                           max_target_length=args.max_target_length, prefix=args.prefix,
                                           seed=args.seed, strict=args.strict, flag="--data")
        skipped = records.skip_summary()
        if skipped:
            print(f"mt5fn evaluate: --data: {skipped}", file=sys.stderr)
        for line in eval_set.summary.report(args.max_input_length, args.max_target_length, "eval data"):
            print(f"mt5fn evaluate: {line}", file=sys.stderr)
        metrics, outputs = evaluate(params, cfg, tokenizer, eval_set, generate_outputs=not args.no_generate,
                                    num_beams=args.num_beams,
                                    max_new_tokens=args.max_new_tokens or args.max_target_length,
                                    batch_size=args.batch_size, device=device,
                                    autocast_dtype=torch.bfloat16 if args.bf16 else None)
    except DataError as error:
        return _fail(str(error))
    text = json.dumps({**metrics, "examples": len(eval_set)}, indent=2)
    print(text)
    try:
        if args.out:
            atomic_write_text(args.out, text + "\n")
        if args.predictions and outputs is not None:
            atomic_write_text(args.predictions, "".join(line.replace("\n", " ") + "\n" for line in outputs))
    except OSError as error:
        return _fail(f"cannot write the results ({error})")
    return 0
