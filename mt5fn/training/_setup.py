"""Building a run: tokenizer, model, data, evaluation set, engine, optimizer and schedule.

Everything a step needs is made here from the ``TrainConfig`` and, when
resuming, the checkpoint's state (model or adapter weights, optimizer,
scheduler, RNG, data position, evaluation state), after the settings that
define the run are checked to be the checkpoint's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..model import MT5Config, init_params, tree_map
from ..data import (DataError, DataSummary, ExampleStream, Fields, build_examples, data_fingerprint, expand_paths,
                    read_records, stream_fingerprint)
from . import _distributed as D
from ._batches import MemoryBatches, StreamBatches
from ._config import TrainConfig
from ._engine import DDPEngine, LocalEngine, parameter_count
from ._errors import TrainError
from ._eval import EvalSet, build_eval_set, require_sacrebleu
from ._optim import make_optimizer
from ._run import Run, check_same_settings, settings_of
from ._schedule import make_scheduler
from ._selection import Selection
from ._state import SHARDED_OPTIMIZER, restore_rng_states


@dataclass
class Setup:
    tokenizer: Any
    cfg: MT5Config
    engine: Any
    batches: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    settings: dict[str, Any]
    dropout: float
    start: int
    selection: Selection
    eval_set: EvalSet | None = None
    summary: DataSummary | None = None
    lora: dict[str, Any] | None = None  # {"rank", "alpha", "targets", "dropout"} of a LoRA run
    notes: list[str] = field(default_factory=list)


def _fields(config: TrainConfig) -> Fields:
    return Fields(config.mode, config.input_field, config.target_field, config.text_field, config.tsv_header)


def _tokenizer(config: TrainConfig, ctx: D.Dist, texts: Callable[[], list[str]], resume_dir: str | None):
    from ..tokenizer import Tokenizer, train_tokenizer

    try:
        if resume_dir is not None:
            return Tokenizer.from_pretrained(resume_dir)
        if config.tokenizer:
            return Tokenizer.from_pretrained(config.tokenizer)
        if config.from_checkpoint:
            try:
                return Tokenizer.from_pretrained(config.from_checkpoint)
            except FileNotFoundError:
                raise TrainError(f"--from-checkpoint {config.from_checkpoint!r} has no tokenizer; pass --tokenizer "
                                 "DIR (a new tokenizer would not match the checkpoint's embeddings)") from None
    except (OSError, ValueError) as error:
        raise TrainError(f"tokenizer: {error}") from None
    _scratch_config(config)  # a bad --preset / --config fails before the tokenizer is trained and written
    directory = os.path.join(config.out, "tokenizer")
    if ctx.is_main:
        corpus = texts()
        print(f"mt5fn train: training a SentencePiece tokenizer (vocab {config.vocab_size}) on "
              f"{len(corpus)} texts -> {directory}", file=sys.stderr)
        try:
            train_tokenizer(corpus, directory, vocab_size=config.vocab_size)
        except (RuntimeError, ValueError, OSError) as error:
            raise TrainError(f"tokenizer training failed: {error}") from None
    D.barrier(ctx)
    return Tokenizer.from_pretrained(directory)


def _scratch_config(config: TrainConfig) -> MT5Config:
    """The model config of a run from scratch (``--preset`` or ``--config``)."""
    try:
        return MT5Config.preset(config.preset) if config.preset else MT5Config.from_hf(config.config)
    except (OSError, ValueError) as error:
        raise TrainError(f"--{'preset' if config.preset else 'config'}: {error}") from None


def _base_model(config: TrainConfig, run: Run, tokenizer) -> tuple[MT5Config, dict]:
    from ..checkpoint import load_pretrained

    vocab = int(tokenizer.vocab_size)
    lora_resume = run.state is not None and run.state.get("settings", {}).get("lora_rank")
    if run.existing is not None and not lora_resume:
        source, flag = run.existing, "--resume"
    elif config.from_checkpoint or lora_resume:
        source = config.from_checkpoint or run.state["settings"]["base_model"]
        flag = "--from-checkpoint"
    else:
        source = None
    if source is not None:
        try:
            cfg, params = load_pretrained(source)
        except (OSError, ValueError, KeyError) as error:
            raise TrainError(f"{flag}: {error}") from None
    else:
        cfg = _scratch_config(config)
        # From scratch the embedding matrix is sized to the tokenizer (extra ids included).
        cfg = cfg.replace(vocab_size=vocab, pad_token_id=int(tokenizer.pad_token_id),
                          eos_token_id=int(tokenizer.eos_token_id), decoder_start_token_id=int(tokenizer.pad_token_id))
        params = init_params(cfg, seed=config.seed)
    if vocab > cfg.vocab_size:
        raise TrainError(f"tokenizer has {vocab} ids but the model's vocab_size is {cfg.vocab_size}")
    return cfg, params


def _lora(config: TrainConfig, run: Run, params: dict, cfg: MT5Config) -> tuple[dict | None, dict | None]:
    if config.lora_rank is None:
        return None, None
    try:
        from .. import lora
    except ImportError as error:
        raise TrainError(f"--lora needs mt5fn.lora ({error})") from None
    alpha = float(config.lora_alpha if config.lora_alpha is not None else 2 * config.lora_rank)
    spec = {"rank": config.lora_rank, "alpha": alpha, "targets": list(config.lora_targets),
            "dropout": config.lora_dropout}
    try:
        if run.existing is not None:
            adapters = lora.load_adapter(run.existing, params, cfg)
        else:
            adapters = lora.init(params, cfg, rank=config.lora_rank, alpha=alpha, targets=tuple(config.lora_targets),
                                 dropout=config.lora_dropout, seed=config.seed)
    except (OSError, ValueError, KeyError) as error:
        raise TrainError(f"--lora: {error}") from None
    return adapters, spec


def _texts_for_tokenizer(records: list) -> list[str]:
    return [piece for item in records for piece in (item if isinstance(item, tuple) else (item,))]


def _data(config: TrainConfig, ctx: D.Dist, run: Run, say: Callable[[str], None]):
    """Records (in memory) or a stream, the tokenizer, the fingerprint."""
    fields = _fields(config)
    try:
        if config.streaming:
            files = expand_paths(config.data)
            fingerprint = stream_fingerprint(files)
            records = None

            def texts() -> list[str]:
                sample = read_records(files[:1], fields, flag="--data")
                return _texts_for_tokenizer(sample.items[:100_000])
        else:
            records = read_records(config.data, fields, strict=config.strict)
            fingerprint = data_fingerprint(records.files)

            def texts() -> list[str]:
                return _texts_for_tokenizer(records.items)
    except DataError as error:
        raise TrainError(str(error)) from None
    tokenizer = _tokenizer(config, ctx, texts, run.existing)
    return fields, records, fingerprint, tokenizer


def _batches(config: TrainConfig, ctx: D.Dist, fields: Fields, records, tokenizer, cfg: MT5Config,
             say: Callable[[str], None]):
    lengths = dict(max_input_length=config.max_input_length, max_target_length=config.max_target_length)
    if config.streaming:
        stream = ExampleStream(config.data, fields, tokenizer, seed=config.seed, prefix=config.prefix,
                               pack_examples=config.pack, strict=config.strict,
                               shuffle_buffer=config.shuffle_buffer, **lengths)
        summary = stream.summarize()
        return StreamBatches(stream, config.batch_size, config.grad_accum, ctx.world_size, cfg.pad_token_id), summary
    examples = build_examples(records.items, tokenizer, config.mode, seed=config.seed, prefix=config.prefix,
                              pack_examples=config.pack, **lengths)
    skipped = records.skip_summary()
    if skipped:
        say(f"mt5fn train: --data: {skipped}")
    batches = MemoryBatches(examples, config.batch_size, config.grad_accum, ctx.world_size, config.seed,
                            cfg.pad_token_id)
    return batches, examples.summary


def _engine(config: TrainConfig, ctx: D.Dist, params: dict, cfg: MT5Config, adapters: dict | None,
            dropout: float):
    params = tree_map(lambda leaf: leaf.detach().to(ctx.device), params)
    if adapters is not None:
        adapters = tree_map(lambda leaf: leaf.detach().to(ctx.device), adapters)
    common = dict(dropout=dropout, max_grad_norm=config.max_grad_norm or None,
                  autocast=torch.bfloat16 if config.bf16 else None,
                  checkpoint_blocks=config.activation_checkpointing)
    if config.fsdp:
        if not ctx.enabled:
            raise TrainError("--fsdp shards over the ranks of a torchrun launch: run it as "
                             "torchrun --nproc_per_node=N -m mt5fn train --fsdp ...")
        from ._fsdp import FSDPEngine

        return FSDPEngine(params, cfg, ctx, **common)
    if ctx.enabled and adapters is None:
        return DDPEngine(params, cfg, ctx, **common)
    return LocalEngine(params, cfg, ctx, adapters=adapters, **common)


def _restore(setup: Setup, run: Run) -> int:
    state = run.state
    if state is None:
        return 0
    try:
        if state.get("sharded_optimizer"):
            setup.engine.load_optimizer(os.path.join(run.existing, SHARDED_OPTIMIZER))
        else:
            setup.optimizer.load_state_dict(state["optimizer"])
        setup.scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        start = int(state["step"])
        setup.batches.restore(state["data"], start)
        setup.selection.restore(state.get("selection"))
    except DataError as error:
        raise TrainError(str(error)) from None
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise TrainError(f"--resume: trainer state in {run.existing!r} is corrupt ({error})") from None
    return start


def _check_sizes(config: TrainConfig, cfg: MT5Config, params: dict) -> None:
    """The size-like options against what one step can hold, before any loop runs over them (the
    span-corruption loop is per token: ``--max-input-length 10**9`` used to spin for hours first):
    a batch of the longest inputs and targets through the model, and the shuffle buffer's examples."""
    from ..checks import preflight

    B, S, T = config.batch_size, config.max_input_length, config.max_target_length
    meta = dict(dtype=torch.long, device="meta")
    try:
        preflight.check_seq2seq(params, cfg, torch.empty(B, S, **meta), torch.empty(B, T, **meta), True,
                                call="the train step", decoder_name="labels", logits="loss")
    except ValueError as error:
        raise TrainError(f"--max-input-length {S} / --max-target-length {T} with --batch-size {B}: {error}") \
            from None
    if config.shuffle_buffer:
        try:  # each buffered example holds up to S + T token ids (8 bytes each as Python ints, at least)
            preflight.check_buffers("the shuffle buffer", f"--shuffle-buffer {config.shuffle_buffer}",
                                    [("buffered examples' token ids", (config.shuffle_buffer, S + T), 8)], "cpu")
        except ValueError as error:
            raise TrainError(f"--shuffle-buffer: {error}") from None


def build(config: TrainConfig, ctx: D.Dist, run: Run, say: Callable[[str], None]) -> Setup:
    fields, records, fingerprint, tokenizer = _data(config, ctx, run, say)
    cfg, params = _base_model(config, run, tokenizer)
    _check_sizes(config, cfg, params)
    adapters, lora_spec = _lora(config, run, params, cfg)
    dropout = cfg.dropout_rate if config.dropout is None else float(config.dropout)
    base_model = os.path.abspath(config.from_checkpoint) if (lora_spec and config.from_checkpoint) else None
    if lora_spec and run.state is not None:
        base_model = run.state["settings"].get("base_model")
    if lora_spec and base_model is None:
        raise TrainError("--lora fine-tunes a pretrained model: give --from-checkpoint DIR")
    settings = settings_of(config, dropout, fingerprint, base_model)
    if run.state is not None:
        check_same_settings(run.state.get("settings", {}), settings, run.existing)
    if config.eval_generate:
        try:
            require_sacrebleu()
        except DataError as error:
            raise TrainError(str(error)) from None
    try:
        batches, summary = _batches(config, ctx, fields, records, tokenizer, cfg, say)
        eval_set = None
        if config.eval_data:
            eval_set, eval_records = build_eval_set(
                config.eval_data, fields, tokenizer, max_input_length=config.max_input_length,
                max_target_length=config.max_target_length, prefix=config.prefix, seed=config.seed,
                strict=config.strict)
            skipped = eval_records.skip_summary()
            if skipped:
                say(f"mt5fn train: --eval-data: {skipped}")
    except DataError as error:
        raise TrainError(str(error)) from None
    for line in summary.report(config.max_input_length, config.max_target_length):
        say(f"mt5fn train: {line}")
    if eval_set is not None:
        for line in eval_set.summary.report(config.max_input_length, config.max_target_length, "eval data"):
            say(f"mt5fn train: {line}")
    engine = _engine(config, ctx, params, cfg, adapters, dropout)
    try:
        trainable = None
        if lora_spec is not None:
            from ..lora import is_trainable as trainable
        optimizer = make_optimizer(engine.trained, config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                   trainable=trainable)
        engine.optimizer = optimizer
        scheduler = make_scheduler(optimizer, config.schedule, warmup_steps=config.warmup,
                                   total_steps=config.steps if config.schedule == "cosine" else None)
    except ValueError as error:
        raise TrainError(str(error)) from None
    selection = Selection(config.best_metric, config.resolved_best_mode, config.early_stopping_patience)
    setup = Setup(tokenizer, cfg, engine, batches, optimizer, scheduler, settings, dropout, 0, selection,
                  eval_set, summary, lora_spec)
    setup.start = _restore(setup, run)
    if lora_spec:
        trained, total = sum(leaf.numel() for leaf in engine.trained_leaves()), parameter_count(params)
        setup.notes.append(f"LoRA rank {lora_spec['rank']} (alpha {lora_spec['alpha']:g}) on "
                           f"{','.join(lora_spec['targets'])}: {trained:,} trainable parameters, "
                           f"{100 * trained / total:.2f}% of {total:,}")
    return setup
