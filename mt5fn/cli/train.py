"""``mt5fn train``: train or fine-tune from text files (also under ``torchrun``).

    mt5fn train --data corpus.txt --preset mt5-small --out run/ --steps 1000 --batch-size 32
    mt5fn train --data pairs.tsv --mode supervised --from-checkpoint ckpt/ --out ft/ --steps 500 --batch-size 16
    mt5fn train ... --out run/ --resume            # continue exactly where the last checkpoint left off
    torchrun --nproc_per_node=4 -m mt5fn train ...  # data parallel; --batch-size stays the global batch
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, metavar="FILE",
                      help="text file, one example per line (repeat for several files)")
    data.add_argument("--mode", choices=("span", "supervised"), default="span",
                      help="span: raw text, T5 span corruption; supervised: 'input<TAB>target' lines (default: span)")
    data.add_argument("--max-input-length", type=int, default=512, help="tokens per input (default 512)")
    data.add_argument("--max-target-length", type=int, default=128,
                      help="tokens per target (default 128; span mode derives it from the input length)")
    data.add_argument("--tokenizer", metavar="DIR", help="SentencePiece tokenizer directory; default: the "
                      "checkpoint's, else one trained on --data into OUT/tokenizer")
    data.add_argument("--vocab-size", type=int, default=8000,
                      help="size of a tokenizer trained on the data, before the 100 extra ids (default 8000)")

    model = parser.add_argument_group("model (exactly one, unless --resume)")
    model.add_argument("--preset", metavar="NAME", help="from scratch with a published shape, e.g. mt5-small")
    model.add_argument("--config", metavar="CONFIG_JSON", help="from scratch with a config.json")
    model.add_argument("--from-checkpoint", metavar="DIR", help="fine-tune a Hugging Face checkpoint directory")

    run = parser.add_argument_group("optimisation")
    run.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoints, logs)")
    run.add_argument("--steps", type=int, required=True, help="total optimizer steps")
    run.add_argument("--batch-size", type=int, required=True,
                     help="global batch (examples per optimizer step, over all ranks and micro-batches)")
    run.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step on each rank (default 1)")
    run.add_argument("--optimizer", choices=("adamw", "adafactor"), default="adamw")
    run.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    run.add_argument("--weight-decay", type=float, default=0.0)
    run.add_argument("--schedule", choices=("constant", "inverse_sqrt", "cosine"), default="constant")
    run.add_argument("--warmup", type=int, default=0, help="linear warmup steps (default 0)")
    run.add_argument("--max-grad-norm", type=float, default=1.0, help="global-norm clipping; 0 disables")
    run.add_argument("--dropout", type=float, default=None, help="dropout rate (default: the config's)")
    run.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    run.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order, noise, dropout")
    run.add_argument("--save-every", type=int, default=0, metavar="N",
                     help="checkpoint every N steps (0: only at the end; Ctrl-C always saves)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/latest, bit for bit")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    run.add_argument("--profile", metavar="TRACE_DIR",
                     help="record a torch.profiler trace (view: tensorboard --logdir TRACE_DIR)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train or fine-tune from text files (torchrun for several GPUs)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training._loop import TrainError, train

    try:
        return train(args).code
    except TrainError as error:
        print(f"mt5fn train: error: {error}", file=sys.stderr)
        return error.code
