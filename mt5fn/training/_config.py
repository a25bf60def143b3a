"""``TrainConfig``: everything one training run is, as a frozen dataclass validated on construction.

``mt5fn train`` turns argv into one (each field is the flag of the same name,
``max_input_length`` <-> ``--max-input-length``), ``mt5fn demo`` builds one in
code, and ``mt5fn.training.train(config)`` runs it. A bad value raises
``TrainConfigError`` (a ``ValueError``) whose ``field`` names the field.
Checks that need the filesystem or the data (files exist, the batch fits the
data, CUDA is present) run when the run starts, as ``TrainError``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..checks import is_int, is_real
from ._schedule import KINDS as SCHEDULES

MODES = ("span", "supervised")
OPTIMIZERS = ("adamw", "adafactor")
EVAL_METRICS = ("eval_loss", "eval_exact_match", "eval_bleu", "eval_chrf")
GENERATION_METRICS = EVAL_METRICS[1:]
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")
MAX_SEED = 2 ** 63 - 1
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


class TrainConfigError(ValueError):
    """A ``TrainConfig`` field of the wrong type or range; ``field`` is its name."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name

    def as_flag_message(self) -> str:
        """The message with the field named as its ``mt5fn train`` flag (``--max-input-length``)."""
        return str(self).replace(self.field, flag(self.field), 1)


def flag(name: str) -> str:
    """The ``mt5fn train`` flag of a field: ``max_input_length`` -> ``--max-input-length``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (see docs/training.md for what each field does).

    Required: ``data`` (files, ``datasets`` folders or globs), ``out``,
    ``steps``, ``batch_size`` (the global batch), and -- unless ``resume`` --
    exactly one model source: ``preset``, ``config`` (a config.json) or
    ``from_checkpoint`` (a Hugging Face directory).
    """

    data: tuple[str, ...]
    out: str
    steps: int
    batch_size: int
    # model
    preset: str | None = None
    config: str | None = None
    from_checkpoint: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 8000
    # data
    mode: str = "span"
    max_input_length: int = 512
    max_target_length: int = 128
    tsv_header: bool | None = None  # None: detect a header line
    input_field: str = "input"
    target_field: str = "target"
    text_field: str = "text"
    prefix: str = ""
    strict: bool = False
    streaming: bool = False
    shuffle_buffer: int = 0  # streaming: draw each example from a buffer of this many
    pack: bool = False
    # optimisation
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    max_grad_norm: float = 1.0
    dropout: float | None = None
    bf16: bool = False
    seed: int = 0
    activation_checkpointing: bool = False
    # run
    save_every: int = 0
    resume: bool = False
    device: str | None = None
    profile: str | None = None
    quiet: bool = False
    max_weight_growth: float = 2.0  # stop when one update grows the weight norm by more; 0 disables
    fsdp: bool = False
    # evaluation
    eval_data: tuple[str, ...] = ()
    eval_every: int = 0
    eval_generate: bool = False
    eval_num_beams: int = 1
    eval_max_new_tokens: int | None = None  # default: max_target_length
    eval_batch_size: int = 32
    best_metric: str | None = None
    best_mode: str | None = None  # default: min for eval_loss, max otherwise
    early_stopping_patience: int | None = None
    # LoRA
    lora_rank: int | None = None
    lora_alpha: float | None = None  # default: 2 x the rank (scale 2)
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("data", "eval_data", "lora_targets"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def resolved_best_mode(self) -> str | None:
        if self.best_metric is None:
            return None
        return self.best_mode or ("min" if self.best_metric == "eval_loss" else "max")


def _fail(name: str, message: str) -> None:
    raise TrainConfigError(name, f"{name} {message}")


def _int(cfg: TrainConfig, name: str, minimum: int, maximum: int | None = None, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if not is_int(value, minimum, maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        _fail(name, f"must be an int {bound}{' or None' if optional else ''}, got {value!r}")


def _real(cfg: TrainConfig, name: str, *, minimum: float, strict: bool = False, below: float | None = None,
          optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if not is_real(value, above=minimum if strict else None, at_least=None if strict else minimum, below=below):
        bound = (f"{'>' if strict else '>='} {minimum}" if below is None else f"in [{minimum}, {below})")
        _fail(name, f"must be a finite number {bound}{' or None' if optional else ''}, got {value!r}")


def _choice(cfg: TrainConfig, name: str, options: tuple, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if value not in options:
        _fail(name, f"must be one of {list(options)}, got {value!r}")


def _text(cfg: TrainConfig, name: str, optional: bool = True, empty_ok: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if not isinstance(value, str) or (not value and not empty_ok):
        _fail(name, f"must be a {'string' if empty_ok else 'non-empty string'}, got {value!r}")


def _bool(cfg: TrainConfig, name: str) -> None:
    if not isinstance(getattr(cfg, name), bool):
        _fail(name, f"must be a bool, got {getattr(cfg, name)!r}")


def _paths(cfg: TrainConfig, name: str, required: bool) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, tuple) or any(not isinstance(p, str) or not p for p in value):
        _fail(name, f"must be a tuple of paths / globs, got {value!r}")
    if required and not value:
        _fail(name, "must name at least one file, folder or glob")


def _check(cfg: TrainConfig) -> None:
    _paths(cfg, "data", required=True)
    _text(cfg, "out", optional=False)
    _int(cfg, "steps", 1)
    _int(cfg, "batch_size", 1)
    for name in ("preset", "config", "from_checkpoint", "tokenizer", "profile"):
        _text(cfg, name)
    _int(cfg, "vocab_size", 1)
    _choice(cfg, "mode", MODES)
    _int(cfg, "max_input_length", 2)
    _int(cfg, "shuffle_buffer", 0)
    _int(cfg, "max_target_length", 2)
    if cfg.tsv_header not in (None, True, False):
        _fail("tsv_header", f"must be True, False or None (detect), got {cfg.tsv_header!r}")
    for name in ("input_field", "target_field", "text_field"):
        _text(cfg, name, optional=False)
    _text(cfg, "prefix", optional=False, empty_ok=True)
    for name in ("strict", "streaming", "pack", "bf16", "activation_checkpointing", "resume", "quiet", "fsdp",
                 "eval_generate"):
        _bool(cfg, name)
    _int(cfg, "grad_accum", 1)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _real(cfg, "lr", minimum=0.0, strict=True)
    _real(cfg, "weight_decay", minimum=0.0)
    _choice(cfg, "schedule", SCHEDULES)
    _int(cfg, "warmup", 0)
    _real(cfg, "max_grad_norm", minimum=0.0)
    _real(cfg, "dropout", minimum=0.0, below=1.0, optional=True)
    _int(cfg, "seed", 0, MAX_SEED)
    _int(cfg, "save_every", 0)
    if cfg.device is not None and (not isinstance(cfg.device, str) or not _DEVICE.match(cfg.device)):
        _fail("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")
    _real(cfg, "max_weight_growth", minimum=0.0)
    if 0 < cfg.max_weight_growth <= 1:
        _fail("max_weight_growth", f"must be 0 (off) or a factor > 1, got {cfg.max_weight_growth!r}")
    _paths(cfg, "eval_data", required=False)
    _int(cfg, "eval_every", 0)
    _int(cfg, "eval_num_beams", 1)
    _int(cfg, "eval_max_new_tokens", 1, optional=True)
    _int(cfg, "eval_batch_size", 1)
    _choice(cfg, "best_metric", EVAL_METRICS, optional=True)
    _choice(cfg, "best_mode", ("min", "max"), optional=True)
    _int(cfg, "early_stopping_patience", 1, optional=True)
    _int(cfg, "lora_rank", 1, optional=True)
    _real(cfg, "lora_alpha", minimum=0.0, strict=True, optional=True)
    if not isinstance(cfg.lora_targets, tuple) or not cfg.lora_targets or any(
            t not in LORA_TARGETS for t in cfg.lora_targets) or len(set(cfg.lora_targets)) != len(cfg.lora_targets):
        _fail("lora_targets", f"must be distinct names out of {list(LORA_TARGETS)}, got {cfg.lora_targets!r}")
    _real(cfg, "lora_dropout", minimum=0.0, below=1.0)
    _check_combinations(cfg)


def _check_combinations(cfg: TrainConfig) -> None:
    if cfg.schedule == "cosine" and cfg.warmup >= cfg.steps:
        _fail("warmup", f"{cfg.warmup} must be below steps {cfg.steps} for the cosine schedule")
    sources = [name for name in ("preset", "config", "from_checkpoint") if getattr(cfg, name) is not None]
    if not cfg.resume and len(sources) != 1:
        raise TrainConfigError("preset", "give exactly one of --preset NAME, --config config.json, "
                               f"--from-checkpoint DIR (got {len(sources)}: {sources or 'none'})")
    if cfg.prefix and cfg.mode != "supervised":
        _fail("prefix", "applies to supervised inputs; span mode corrupts raw text")
    if cfg.shuffle_buffer and not cfg.streaming:
        _fail("shuffle_buffer", "is for --streaming (in-memory data is permuted whole every epoch)")
    if cfg.pack and cfg.mode != "supervised":
        _fail("pack", "is for supervised data (span mode always packs its text into full chunks)")
    if cfg.eval_every and not cfg.eval_data:
        _fail("eval_every", f"{cfg.eval_every} needs eval_data (--eval-data FILE)")
    if cfg.eval_generate and not cfg.eval_data:
        _fail("eval_generate", "needs eval_data (--eval-data FILE)")
    if cfg.eval_generate and cfg.mode != "supervised":
        _fail("eval_generate", "compares generations with targets: it needs mode 'supervised'")
    if cfg.best_metric is not None:
        if not cfg.eval_data:
            _fail("best_metric", f"{cfg.best_metric!r} needs eval_data (--eval-data FILE)")
        if cfg.best_metric in GENERATION_METRICS and not cfg.eval_generate:
            _fail("best_metric", f"{cfg.best_metric!r} is a generation metric: it needs eval_generate "
                  "(--eval-generate)")
    elif cfg.best_mode is not None:
        _fail("best_mode", "needs best_metric (--best-metric NAME)")
    if cfg.early_stopping_patience is not None and cfg.best_metric is None:
        _fail("early_stopping_patience", "needs best_metric (--best-metric NAME): it counts evaluations "
              "without improvement of that metric")
    if cfg.fsdp and cfg.optimizer == "adafactor":
        _fail("optimizer", "'adafactor' cannot run under --fsdp: torch 2.13's Adafactor fails on FSDP2's "
              "DTensor parameters (aten.pow_.Scalar: in-place operations that require placement changes are "
              "not supported); use --optimizer adamw with --fsdp")
    if cfg.lora_rank is None:
        for name, default in (("lora_alpha", None), ("lora_dropout", 0.0)):
            if getattr(cfg, name) != default:
                _fail(name, "needs lora_rank (--lora RANK)")
        if cfg.lora_targets != ("q", "v"):
            _fail("lora_targets", "needs lora_rank (--lora RANK)")
    elif cfg.fsdp:
        _fail("fsdp", "with LoRA is not supported: an adapter is small enough to train data-parallel "
              "(run under torchrun without --fsdp)")
