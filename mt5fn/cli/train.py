"""``mt5fn train``: train or fine-tune from text / JSON / parquet data (also under ``torchrun``).

    mt5fn train --data corpus.txt --preset mt5-small --out run/ --steps 1000 --batch-size 32
    mt5fn train --data train.jsonl --mode supervised --from-checkpoint ckpt/ --out ft/ --steps 500 \\
        --batch-size 16 --eval-data dev.jsonl --eval-every 100 --eval-generate --best-metric eval_bleu
    mt5fn train ... --out run/ --resume            # continue exactly where the last checkpoint left off
    torchrun --nproc_per_node=4 -m mt5fn train ... [--fsdp]   # data parallel / sharded; --batch-size stays global
"""

from __future__ import annotations

import argparse
import sys


def _targets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, metavar="FILE",
                      help="training data: .txt, .tsv, .jsonl/.json, .parquet, a datasets.save_to_disk folder, or "
                           "a glob; repeat for several")
    data.add_argument("--mode", choices=("span", "supervised"), default="span",
                      help="span: raw text, T5 span corruption; supervised: (input, target) pairs (default: span)")
    data.add_argument("--max-input-length", type=int, default=512, help="tokens per input (default 512)")
    data.add_argument("--max-target-length", type=int, default=128,
                      help="tokens per target (default 128; span mode derives it from the input length)")
    header = data.add_mutually_exclusive_group()
    header.add_argument("--tsv-header", dest="tsv_header", action="store_const", const=True, default=None,
                        help="the first line of each .tsv names its columns (default: detected)")
    header.add_argument("--no-tsv-header", dest="tsv_header", action="store_const", const=False,
                        help="the first line of each .tsv is data")
    data.add_argument("--input-field", default="input", help="input column / JSON field (default: input)")
    data.add_argument("--target-field", default="target", help="target column / JSON field (default: target)")
    data.add_argument("--text-field", default="text", help="text column / JSON field in span mode (default: text)")
    data.add_argument("--prefix", default="", help='prepended to every input, e.g. "translate English to German: "')
    data.add_argument("--strict", action="store_true", help="stop at the first malformed record (default: skip "
                      "and count them)")
    data.add_argument("--streaming", action="store_true",
                      help="read the data lazily (corpora larger than memory; resumes at the exact record)")
    data.add_argument("--shuffle-buffer", type=int, default=0, metavar="N",
                      help="--streaming: draw each example at random from the next N (default 0: file order)")
    data.add_argument("--pack", action="store_true", help="supervised: join whole examples into full rows")
    data.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory; default: the checkpoint's, else "
                      "a SentencePiece model trained on --data into OUT/tokenizer")
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
    run.add_argument("--activation-checkpointing", action="store_true",
                     help="recompute each block in the backward: far less memory for long inputs")
    run.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order, noise, dropout")
    run.add_argument("--save-every", type=int, default=0, metavar="N",
                     help="checkpoint every N steps (0: only at the end; Ctrl-C always saves)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/latest, bit for bit")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument("--fsdp", action="store_true", help="under torchrun: shard parameters, gradients and "
                     "optimizer state over the ranks (FSDP2)")
    run.add_argument("--max-weight-growth", type=float, default=2.0, metavar="FACTOR",
                     help="stop before saving when one update grows the weight norm by more (default 2; 0: off)")
    run.add_argument("--profile", metavar="TRACE_DIR",
                     help="record a torch.profiler trace (view: tensorboard --logdir TRACE_DIR)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = parser.add_argument_group("evaluation and model selection")
    ev.add_argument("--eval-data", action="append", default=[], metavar="FILE",
                    help="held-out data in any --data format (evaluated every --eval-every steps and at the end)")
    ev.add_argument("--eval-every", type=int, default=0, metavar="N", help="evaluate every N steps (0: at the end)")
    ev.add_argument("--eval-generate", action="store_true",
                    help="also generate and score exact match, BLEU and chrF (sacrebleu)")
    ev.add_argument("--eval-num-beams", type=int, default=1, help="beams for --eval-generate (default 1: greedy)")
    ev.add_argument("--eval-max-new-tokens", type=int, default=None,
                    help="generated tokens per input (default: --max-target-length)")
    ev.add_argument("--eval-batch-size", type=int, default=32, help="evaluation batch (default 32)")
    ev.add_argument("--best-metric", choices=("eval_loss", "eval_exact_match", "eval_bleu", "eval_chrf"),
                    help="keep OUT/best on the checkpoint with the best value of this metric")
    ev.add_argument("--best-mode", choices=("min", "max"), help="default: min for eval_loss, max otherwise")
    ev.add_argument("--early-stopping-patience", type=int, default=None, metavar="K",
                    help="stop after K evaluations without improvement of --best-metric")

    lora = parser.add_argument_group("LoRA (train an adapter only; checkpoints are PEFT adapters)")
    lora.add_argument("--lora", dest="lora_rank", type=int, default=None, metavar="RANK", help="adapter rank")
    lora.add_argument("--lora-alpha", type=float, default=None, help="scale alpha / rank (default alpha: 2 x the rank)")
    lora.add_argument("--lora-targets", type=_targets, default=("q", "v"), metavar="q,k,v,o,wi,wo",
                      help="projections that get adapters (default q,v)")
    lora.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapter input (default 0)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train or fine-tune (torchrun for several processes)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` of parsed ``mt5fn train`` arguments (every field is the flag of its name)."""
    import dataclasses

    from ..training import TrainConfig

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)}
    values["data"], values["eval_data"] = tuple(values["data"]), tuple(values["eval_data"])
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfigError, TrainError, train
    from ._checks import one_line

    try:
        config = config_from_args(args)
    except TrainConfigError as error:
        print(f"mt5fn train: error: {one_line(error.as_flag_message())}", file=sys.stderr)
        return 2
    try:
        return train(config).code
    except TrainError as error:  # one line, always (a refused trainer state's reason spans several)
        print(f"mt5fn train: error: {one_line(error)}", file=sys.stderr)
        return error.code
