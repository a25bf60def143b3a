"""The training loop behind ``mt5fn train`` (and ``mt5fn demo``).

One optimizer step reads a global batch chosen by ``BatchPlan`` (a pure
function of the step), computes loss and gradients with the pure
``train_step`` (one process) or the DDP step (under torchrun), stops on a
non-finite loss, applies the update with ``torch.optim`` and logs. Checkpoints
(``_state``) hold the model in Hugging Face format plus optimizer, scheduler,
RNG states and the data position; everything random in a step is derived
from ``(seed, step, rank)``, so a resumed run repeats an uninterrupted one
bit for bit. Ctrl-C / SIGTERM finish the current step, save, and exit 130.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..checkpoint import atomic_write_text
from ..model import MT5Config, init_params, tree_map
from . import _distributed as D
from . import _profiling
from ._optim import apply_gradients, make_optimizer
from ._schedule import make_scheduler
from ._state import (FORMAT_VERSION, CheckpointError, latest_checkpoint, load_checkpoint, restore_rng_states,
                     rng_states, save_checkpoint)
from ._step import train_step
from ._text_data import BatchPlan, DataError, _mix, build_examples, data_fingerprint, make_batch, read_examples

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
METRICS = "metrics.jsonl"

# Settings a resumed run must share with the checkpoint for its steps to be the same steps.
_PINNED = ("mode", "batch_size", "grad_accum", "seed", "max_input_length", "max_target_length", "optimizer",
           "lr", "weight_decay", "schedule", "warmup", "dropout", "max_grad_norm", "bf16", "data_sha256")


class TrainError(Exception):
    """A run that cannot start or continue; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TrainResult:
    code: int
    out_dir: str
    checkpoint: str | None
    losses: list[float] = field(default_factory=list)
    cfg: MT5Config | None = None
    params: dict | None = None
    tokenizer: Any = None


def _check_args(args) -> None:
    def positive(name: str, value, zero_ok: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
            raise TrainError(f"--{name.replace('_', '-')} must be a {'non-negative' if zero_ok else 'positive'} "
                             f"int, got {value!r}")

    positive("steps", args.steps)
    positive("batch_size", args.batch_size)
    positive("grad_accum", args.grad_accum)
    positive("save_every", args.save_every, zero_ok=True)
    positive("warmup", args.warmup, zero_ok=True)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise TrainError(f"--lr must be a positive number, got {args.lr!r}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise TrainError(f"--dropout must be in [0, 1), got {args.dropout!r}")
    if args.max_grad_norm < 0:
        raise TrainError(f"--max-grad-norm must be >= 0 (0 disables clipping), got {args.max_grad_norm!r}")
    if args.schedule == "cosine" and args.warmup >= args.steps:
        raise TrainError(f"--warmup {args.warmup} must be below --steps {args.steps} for the cosine schedule")
    if not args.resume and sum(x is not None for x in (args.preset, args.config, args.from_checkpoint)) != 1:
        raise TrainError("give exactly one of --preset NAME, --config config.json, --from-checkpoint DIR")


def _tokenizer(args, ctx: D.Dist, raw: list, resume_dir: str | None):
    from ..tokenizer import Tokenizer, train_tokenizer

    try:
        if resume_dir is not None:
            return Tokenizer.from_pretrained(resume_dir)
        if args.tokenizer:
            return Tokenizer.from_pretrained(args.tokenizer)
        if args.from_checkpoint and os.path.isfile(os.path.join(args.from_checkpoint, "spiece.model")):
            return Tokenizer.from_pretrained(args.from_checkpoint)
    except (OSError, ValueError) as error:
        raise TrainError(f"tokenizer: {error}") from None
    if args.from_checkpoint:
        raise TrainError(f"--from-checkpoint {args.from_checkpoint!r} has no spiece.model; pass --tokenizer DIR "
                         "(a new tokenizer would not match the checkpoint's embeddings)")
    directory = os.path.join(args.out, "tokenizer")
    if ctx.is_main:
        texts = [piece for item in raw for piece in (item if isinstance(item, tuple) else (item,))]
        print(f"mt5fn train: training a SentencePiece tokenizer (vocab {args.vocab_size}) on "
              f"{len(texts)} texts -> {directory}", file=sys.stderr)
        try:
            train_tokenizer(texts, directory, vocab_size=args.vocab_size)
        except (RuntimeError, ValueError, OSError) as error:
            raise TrainError(f"tokenizer training failed: {error}") from None
    D.barrier(ctx)
    return Tokenizer.from_pretrained(directory)


def _model(args, tokenizer, state_cfg=None, state_params=None) -> tuple[MT5Config, dict]:
    from ..checkpoint import load_pretrained

    vocab = int(tokenizer.vocab_size)
    if state_cfg is not None:
        cfg, params = state_cfg, state_params
    elif args.from_checkpoint:
        try:
            cfg, params = load_pretrained(args.from_checkpoint)
        except (OSError, ValueError, KeyError) as error:
            raise TrainError(f"--from-checkpoint: {error}") from None
    else:
        try:
            cfg = MT5Config.preset(args.preset) if args.preset else MT5Config.from_hf(args.config)
        except (OSError, ValueError) as error:
            raise TrainError(f"--{'preset' if args.preset else 'config'}: {error}") from None
        # From scratch the embedding matrix is sized to the tokenizer (extra ids included).
        cfg = cfg.replace(vocab_size=vocab, pad_token_id=int(tokenizer.pad_token_id),
                          eos_token_id=int(tokenizer.eos_token_id), decoder_start_token_id=int(tokenizer.pad_token_id))
        params = init_params(cfg, seed=args.seed)
    if vocab > cfg.vocab_size:
        raise TrainError(f"tokenizer has {vocab} ids but the model's vocab_size is {cfg.vocab_size}")
    return cfg, params


def _settings(args, dropout: float, data_sha: str) -> dict[str, Any]:
    return {"mode": args.mode, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "seed": args.seed,
            "max_input_length": args.max_input_length, "max_target_length": args.max_target_length,
            "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
            "schedule": args.schedule, "warmup": args.warmup, "dropout": dropout,
            "max_grad_norm": args.max_grad_norm, "bf16": bool(args.bf16), "data_sha256": data_sha}


def _check_same_settings(saved: dict[str, Any], now: dict[str, Any], path: str) -> None:
    differ = [f"{name}: checkpoint {saved.get(name)!r}, now {now[name]!r}" for name in _PINNED
              if saved.get(name) != now[name]]
    if differ:
        raise TrainError(f"--resume: the run settings differ from checkpoint {path!r}, so it cannot continue "
                         "the same run: " + "; ".join(differ))


class _Interrupt:
    """Turns the first SIGINT / SIGTERM into a flag checked between steps; a second one aborts."""

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        print(f"\nmt5fn train: {signal.Signals(signum).name} received; saving a checkpoint after this step "
              "(send it again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Logger:
    """tqdm bar, TensorBoard scalars and ``metrics.jsonl`` (rank 0 only)."""

    def __init__(self, args, start: int, enabled: bool, echo: Callable[[str], None]) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=args.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        disable=getattr(args, "quiet", False), file=sys.stderr)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            echo("mt5fn train: tensorboard is not installed, so no TensorBoard scalars are written "
                 "(pip install 'mt5fn[train]' or pip install tensorboard)")
        else:
            self.writer = SummaryWriter(os.path.join(args.out, "tensorboard"))
        self.metrics_path = os.path.join(args.out, METRICS)
        _truncate_metrics(self.metrics_path, start)
        self.metrics = open(self.metrics_path, "a", encoding="utf-8")

    def log(self, step: int, loss: float, lr: float, grad_norm: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for name in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.writer.add_scalar(f"train/{name}", record[name], step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.metrics.close()


def _truncate_metrics(path: str, start: int) -> None:
    """Keep only the records of steps <= ``start`` (a resumed run rewrites what followed)."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        kept = [line for line in handle if line.strip() and json.loads(line)["step"] <= start]
    atomic_write_text(path, "".join(kept))


def read_metrics(out_dir: str) -> list[dict[str, Any]]:
    """The per-step records a run wrote to ``OUT/metrics.jsonl``."""
    with open(os.path.join(out_dir, METRICS), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def train(args, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Run (or resume) training as described by the ``mt5fn train`` arguments ``args``."""
    echo = echo or (lambda message: print(message, file=sys.stderr, flush=True))
    _check_args(args)
    ctx = D.setup(args.device)
    try:
        return _train(args, ctx, echo)
    finally:
        D.teardown(ctx)


def _train(args, ctx: D.Dist, echo: Callable[[str], None]) -> TrainResult:
    say = echo if ctx.is_main else (lambda message: None)
    try:
        existing = latest_checkpoint(args.out) if os.path.isdir(args.out) else None
    except CheckpointError as error:
        raise TrainError(str(error)) from None
    if args.resume and existing is None:
        raise TrainError(f"--resume: {args.out!r} holds no checkpoint (no 'latest' file); start without --resume")
    if not args.resume and existing is not None:
        raise TrainError(f"--out {args.out!r} already holds a checkpoint ({existing}); pass --resume to continue "
                         "it, or choose another --out (nothing was overwritten)")
    try:
        raw = read_examples(args.data, args.mode)
        data_sha = data_fingerprint(args.data)
    except DataError as error:
        raise TrainError(str(error)) from None
    if ctx.is_main:
        os.makedirs(args.out, exist_ok=True)
    D.barrier(ctx)

    state = None
    state_cfg = state_params = None
    if existing is not None:
        try:
            state_cfg, state_params, state = load_checkpoint(existing)
        except CheckpointError as error:
            raise TrainError(str(error)) from None
    tokenizer = _tokenizer(args, ctx, raw, existing)
    cfg, params = _model(args, tokenizer, state_cfg, state_params)
    dropout = cfg.dropout_rate if args.dropout is None else float(args.dropout)
    settings = _settings(args, dropout, data_sha)
    if state is not None:
        _check_same_settings(state.get("settings", {}), settings, existing)

    try:
        examples = build_examples(raw, tokenizer, args.mode, max_input_length=args.max_input_length,
                                  max_target_length=args.max_target_length, seed=args.seed)
        plan = BatchPlan(len(examples), args.batch_size, args.grad_accum, ctx.world_size, args.seed)
    except DataError as error:
        raise TrainError(str(error)) from None

    params = tree_map(lambda leaf: leaf.detach().to(ctx.device), params)
    ddp = None
    if ctx.enabled:
        from ..model import MT5Module

        module = MT5Module(cfg, params)
        params = module.params()  # the nn.Parameters DDP fills .grad of; the optimizer owns them
        ddp = D.wrap_ddp(module, ctx)
    try:
        optimizer = make_optimizer(params, args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
        scheduler = make_scheduler(optimizer, args.schedule, warmup_steps=args.warmup,
                                   total_steps=args.steps if args.schedule == "cosine" else None)
    except ValueError as error:
        raise TrainError(str(error)) from None
    start = 0
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng_states(state["rng"])
            start = int(state["step"])
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise TrainError(f"--resume: trainer state in {existing!r} is corrupt ({error})") from None
        say(f"mt5fn train: resuming from {existing} at step {start}")
    result = TrainResult(EXIT_OK, args.out, existing, cfg=cfg, params=params, tokenizer=tokenizer)
    if start >= args.steps:
        say(f"mt5fn train: checkpoint is at step {start}, --steps is {args.steps}: nothing to do")
        return result

    say(f"mt5fn train: {len(examples)} examples, global batch {args.batch_size} = {ctx.world_size} rank(s) x "
        f"{args.grad_accum} micro-batch(es) x {plan.micro_batch_size}; {plan.batches_per_epoch} steps per epoch; "
        f"model {cfg.model_type} d_model={cfg.d_model} layers={cfg.num_layers}+{cfg.num_decoder_layers} "
        f"vocab={cfg.vocab_size}; device {ctx.device}")

    def save(step: int, loss: float) -> str | None:
        path = None
        if ctx.is_main:
            to_save = {"format": FORMAT_VERSION, "step": step, "loss": loss, "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "rng": rng_states(), "settings": settings,
                       "data": {**plan.position(step), "num_examples": plan.num_examples, "seed": args.seed,
                                "world_size": ctx.world_size}}
            path = save_checkpoint(args.out, step, tree_map(lambda t: t.detach(), params), cfg, tokenizer,
                                   to_save)
        D.barrier(ctx)  # other ranks wait until the checkpoint is complete
        return path

    autocast = torch.bfloat16 if args.bf16 else None
    max_norm = args.max_grad_norm or None
    logger = _Logger(args, start, ctx.is_main, say)
    active = max(1, min(3, args.steps - start - 2))
    try:
        with _Interrupt() as interrupt, _profiling.maybe_profile(args.profile, active=active,
                                                                 worker_name=f"rank{ctx.rank}") as profile_step:
            last_time = time.perf_counter()
            for step in range(start, args.steps):
                epoch = plan.position(step)["epoch"]
                batches = [{key: value.to(ctx.device) for key, value in
                            make_batch(examples, indices, epoch, cfg.pad_token_id).items()}
                           for indices in plan.local_micro_batches(step, ctx.rank)]
                generator = torch.Generator(ctx.device).manual_seed(_mix(args.seed, step, ctx.rank, 0xD0))
                if ddp is None:
                    out = train_step(params, cfg, batches, dropout_rate=dropout, generator=generator,
                                     max_grad_norm=max_norm, autocast_dtype=autocast)
                else:
                    out = D.ddp_step(ddp, params, cfg, batches, ctx, dropout_rate=dropout, generator=generator,
                                     max_grad_norm=max_norm, autocast_dtype=autocast)
                loss, grad_norm = float(out.loss), float(out.grad_norm)
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    value = loss if not math.isfinite(loss) else grad_norm
                    keep = latest_checkpoint(args.out)
                    raise TrainError(f"non-finite {what} ({value}) at step {step + 1}; stopping without saving. "
                                     f"Last good checkpoint: {keep or 'none (no checkpoint was saved yet)'}. "
                                     "Lower --lr, enable clipping (--max-grad-norm) or check the data.",
                                     EXIT_DIVERGED)
                lr = optimizer.param_groups[0]["lr"]
                apply_gradients(optimizer, params, out.grads)
                scheduler.step()
                done = step + 1
                input_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
                tokens = D.all_sum(ctx, input_tokens) + out.num_tokens
                now = time.perf_counter()
                logger.log(done, loss, lr, grad_norm, tokens / max(now - last_time, 1e-9))
                last_time = now
                result.losses.append(loss)
                profile_step()
                stop = D.any_rank(ctx, interrupt.flag)
                if stop or done == args.steps or (args.save_every and done % args.save_every == 0):
                    result.checkpoint = save(done, loss) or result.checkpoint
                if stop:
                    say(f"mt5fn train: interrupted at step {done}; checkpoint saved to "
                        f"{result.checkpoint or latest_checkpoint(args.out)}; continue with --resume")
                    result.code = EXIT_INTERRUPTED
                    return result
                last_time = time.perf_counter()
    finally:
        logger.close()
    say(f"mt5fn train: done, {args.steps} steps; final loss {result.losses[-1]:.4f}; "
        f"checkpoint {result.checkpoint}")
    return result
