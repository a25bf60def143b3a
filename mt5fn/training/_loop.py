"""The training loop behind ``mt5fn train`` (and ``mt5fn demo``): ``train(TrainConfig(...))``.

A run is four steps, each in its own module:

1. open or resume the run (``_run``): the output directory, its lock, the
   checkpoint to continue;
2. build the model and the data (``_setup``): tokenizer, weights (or LoRA
   adapters), examples or a stream, the evaluation set, the engine (one
   process, DDP or FSDP2), optimizer and schedule, restored when resuming;
3. run the steps (here): one optimizer step reads the global batch of that
   step, computes loss and gradients, stops on a non-finite loss, applies the
   update, checks the new weights (``_safety``), logs, evaluates every
   ``eval_every`` steps and at the end, keeps ``OUT/best``, stops early when
   asked;
4. save (``_saving``): checkpoints every ``save_every`` steps, at each new
   best, at the end and on Ctrl-C / SIGTERM (then exit 130).

Everything random in a step is derived from ``(seed, step, rank)``, so a
resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..model import MT5Config
from ..checkpoint import atomic_write_text
from ..data import mix_seed
from . import _distributed as D
from . import _profiling
from ._config import TrainConfig
from ._errors import EXIT_INTERRUPTED, EXIT_OK, TrainError
from ._eval import evaluate
from ._interrupt import Interrupt
from ._logging import Logger
from ._run import Run, open_run
from ._safety import WeightGuard
from ._saving import Saver
from ._setup import Setup, build
from ._state import BEST, latest_checkpoint, point

EVAL_JSON = "eval.json"


@dataclass
class TrainResult:
    """What a run ended with. ``params`` is the model (the base model for LoRA, whose trained
    ``adapters`` are separate); under FSDP it is None (the checkpoint holds the gathered weights)."""

    code: int
    out_dir: str
    checkpoint: str | None
    losses: list[float] = field(default_factory=list)
    cfg: MT5Config | None = None
    params: dict | None = None
    tokenizer: Any = None
    adapters: dict | None = None
    eval: dict[str, float] | None = None
    best: str | None = None
    stopped_early: bool = False


def train(config: TrainConfig, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Run (or resume) the training run ``config`` describes; ``echo`` receives the progress lines
    (default: stderr). Raises ``TrainError`` (with an exit ``code``) when the run cannot start or go on."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be an mt5fn.training.TrainConfig, got {type(config).__name__}")
    echo = echo or (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        ctx = D.setup(config.device)
    except ValueError as error:
        raise TrainError(str(error)) from None
    say = echo if ctx.is_main else (lambda message: None)
    try:
        with open_run(config, ctx, say) as run:
            setup = build(config, ctx, run, say)
            return _run_steps(config, ctx, run, setup, say)
    finally:
        D.teardown(ctx)


def _evaluate(config: TrainConfig, ctx: D.Dist, setup: Setup) -> dict[str, float]:
    """The evaluation metrics, computed on rank 0 and shared with every rank."""
    params = setup.engine.effective_params()  # FSDP: gathered on rank 0 (every rank takes part)
    metrics = None
    if ctx.is_main:
        metrics, _ = evaluate(params, setup.cfg, setup.tokenizer, setup.eval_set,
                              generate_outputs=config.eval_generate, num_beams=config.eval_num_beams,
                              max_new_tokens=config.eval_max_new_tokens or config.max_target_length,
                              batch_size=config.eval_batch_size, device=params["shared"].device,
                              autocast_dtype=torch.bfloat16 if config.bf16 else None)
    return D.broadcast_object(ctx, metrics)


def _describe(config: TrainConfig, ctx: D.Dist, setup: Setup) -> str:
    cfg = setup.cfg
    engine = {"FSDPEngine": "FSDP2", "DDPEngine": "DDP"}.get(
        type(setup.engine).__name__, "data parallel (adapter gradients all-reduced)" if ctx.enabled else "one process")
    return (f"mt5fn train: {setup.batches.describe()}, global batch {config.batch_size} = {ctx.world_size} rank(s) "
            f"x {config.grad_accum} micro-batch(es) x {setup.batches.micro_batch_size}; model {cfg.model_type} "
            f"d_model={cfg.d_model} layers={cfg.num_layers}+{cfg.num_decoder_layers} vocab={cfg.vocab_size}; "
            f"{engine} on {ctx.device}" + ("; activation checkpointing" if config.activation_checkpointing else ""))


def _write_eval_json(out: str, step: int, metrics: dict[str, float], setup: Setup, best: str | None) -> None:
    selection = setup.selection
    record = {"step": step, **metrics}
    if selection.metric is not None:
        record["best"] = {"metric": selection.metric, "mode": selection.mode, "value": selection.best_value,
                          "step": selection.best_step, "checkpoint": best}
    atomic_write_text(os.path.join(out, EVAL_JSON), json.dumps(record, indent=2) + "\n")


def _one_step(config: TrainConfig, ctx: D.Dist, setup: Setup, guard: WeightGuard, step: int
              ) -> tuple[float, float, float, int]:
    """Optimizer step ``step`` (0-based): batch, loss and gradients, the finite check, the update, the
    weight check. Returns ``(loss, lr, grad_norm, tokens)``."""
    batches = setup.batches.local(step, ctx.rank, ctx.device)
    generator = torch.Generator(ctx.device).manual_seed(mix_seed(config.seed, step, ctx.rank, 0xD0))
    out = setup.engine.compute(batches, generator)
    loss, grad_norm = float(out.loss), float(out.grad_norm)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
        raise guard.stop(f"non-finite {what} ({value}) at step {step + 1}")
    lr = setup.optimizer.param_groups[0]["lr"]
    setup.engine.apply(out)
    setup.scheduler.step()
    guard.check(step + 1)
    input_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    return loss, lr, grad_norm, int(D.all_sum(ctx, input_tokens)) + out.num_tokens


def _finish(out: str, result: TrainResult, setup: Setup, metrics: dict[str, float] | None, step: int | None,
            say: Callable[[str], None]) -> None:
    """Rank 0: ``OUT/eval.json`` and the closing lines."""
    selection = setup.selection
    if metrics is not None:
        result.best = latest_checkpoint(out, BEST) if selection.metric else None
        _write_eval_json(out, step, metrics, setup, result.best)
        result.eval = metrics
        say(f"mt5fn train: evaluation at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            + (f"; best {selection.metric} {selection.best_value:.4g} at step {selection.best_step} ({result.best})"
               if selection.metric else ""))
    say(f"mt5fn train: done, {len(result.losses)} steps; final loss {result.losses[-1]:.4f}; "
        f"checkpoint {result.checkpoint}")


def _run_steps(config: TrainConfig, ctx: D.Dist, run: Run, setup: Setup, say: Callable[[str], None]) -> TrainResult:
    out, engine, start, selection = run.out, setup.engine, setup.start, setup.selection
    if run.existing is not None:
        say(f"mt5fn train: resuming from {run.existing} at step {start}")
    result = TrainResult(EXIT_OK, out, run.existing, cfg=setup.cfg,
                         params=None if config.fsdp else engine.model_params(),
                         tokenizer=setup.tokenizer, adapters=getattr(engine, "adapters", None))
    if start >= config.steps:
        say(f"mt5fn train: checkpoint is at step {start}, --steps is {config.steps}: nothing to do")
        return result
    say(_describe(config, ctx, setup))
    for note in setup.notes:
        say(f"mt5fn train: {note}")

    saver = Saver(out, setup, ctx)
    guard = WeightGuard(engine.weight_norm, config.max_weight_growth, lambda: latest_checkpoint(out))
    logger = Logger(out, config.steps, start, ctx.is_main, config.quiet, say)
    active = max(1, min(3, config.steps - start - 2))
    metrics, eval_step = None, None
    try:
        with Interrupt() as interrupt, _profiling.maybe_profile(config.profile, active=active,
                                                                worker_name=f"rank{ctx.rank}") as profile_step:
            last_time = time.perf_counter()
            for step in range(start, config.steps):
                loss, lr, grad_norm, tokens = _one_step(config, ctx, setup, guard, step)
                done = step + 1
                logger.log_step(done, loss, lr, grad_norm, tokens / max(time.perf_counter() - last_time, 1e-9))
                result.losses.append(loss)
                profile_step()
                stop = D.any_rank(ctx, interrupt.flag)
                improved = early = False
                if setup.eval_set is not None and not stop and (
                        done == config.steps or (config.eval_every and done % config.eval_every == 0)):
                    metrics, eval_step = _evaluate(config, ctx, setup), done
                    logger.log_eval(done, metrics)
                    improved = selection.update(metrics, done)
                    early = selection.should_stop and done < config.steps
                if stop or early or improved or done == config.steps or (
                        config.save_every and done % config.save_every == 0):
                    result.checkpoint = saver.save(done, loss)
                if improved and ctx.is_main:
                    point(out, BEST, result.checkpoint)
                if stop:
                    say(f"mt5fn train: interrupted at step {done}; checkpoint saved to {result.checkpoint}; "
                        "continue with --resume")
                    result.code = EXIT_INTERRUPTED
                    return result
                if early:
                    say(f"mt5fn train: early stopping at step {done}: {config.best_metric} has not improved for "
                        f"{selection.stale} evaluations (best {selection.best_value:.4g} at step "
                        f"{selection.best_step})")
                    result.stopped_early = True
                    break
                last_time = time.perf_counter()
    finally:
        logger.close()
    if ctx.is_main:
        _finish(out, result, setup, metrics, eval_step, say)
    return result
