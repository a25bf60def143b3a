"""The benchmark's cases and, for each, the callables of every implementation.

A case is a kind of work on a shape: ``forward`` (teacher-forced logits, no
grad), ``train`` (one training step) or ``encode`` (encoder only, no grad).

``train`` times exactly the step ``mt5fn train`` runs: ``mt5fn.training.train_step``
on the batch (loss, the gradient of every parameter, global-norm clipping at
1.0 as the CLI's default ``--max-grad-norm``), against transformers'
``loss.backward()`` plus ``clip_grad_norm_(1.0)``. Train cases may run under
bfloat16 autocast (``--bf16``: float32 weights, both implementations under
``torch.autocast``) and with activation checkpointing (mt5fn
``checkpoint_blocks=True`` / ``--activation-checkpointing``; transformers
``gradient_checkpointing_enable()``).

Each case builds: transformers, mt5fn eager, optionally mt5fn under
``torch.compile(fullgraph=True)`` and, for train cases with ``--func-grad``,
the same loss differentiated by ``torch.func.grad_and_value`` (what
``train_step`` used before it took plain autograd); plus one on meta tensors
used only to count FLOPs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

import mt5fn

KINDS = ("forward", "train", "encode")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    batch: int
    source: int
    target: int  # unused by ``encode``
    group: str  # "main", "long" or "scaling": which table the row goes to
    autocast: bool = False  # bf16 autocast over float32 weights (train)
    checkpoint: bool = False  # activation checkpointing (train)

    @property
    def shape(self) -> str:
        if self.kind == "encode":
            return f"{self.batch}x{self.source}"
        extra = (" bf16-autocast" if self.autocast else "") + (" ckpt" if self.checkpoint else "")
        return f"{self.batch}x{self.source}->{self.target}{extra}"


def default_cases(*, batch: int, source: int, target: int, encoder_batch: int, scale_lengths: list[int],
                  scale_batches: list[int], long_length: int = 4096, checkpoint_length: int = 2048
                  ) -> dict[str, Case]:
    cases = [Case("forward", "forward", batch, source, target, "main"),
             Case("train", "train", batch, source, target, "main"),
             Case("train-bf16", "train", batch, source, target, "main", autocast=True),
             Case("encoder", "encode", encoder_batch, source, 0, "main"),
             Case("train-long", "train", 1, long_length, target, "long"),
             Case("train-long-ckpt", "train", 1, long_length, target, "long", checkpoint=True),
             Case(f"train-s{checkpoint_length}", "train", 1, checkpoint_length, target, "long"),
             Case(f"train-s{checkpoint_length}-ckpt", "train", 1, checkpoint_length, target, "long", checkpoint=True)]
    cases += [Case(f"scale-s{length}", "forward", 1, length, target, "scaling") for length in scale_lengths]
    cases += [Case(f"scale-b{size}", "forward", size, source, target, "scaling") for size in scale_batches]
    return {case.name: case for case in cases}


@dataclass
class Runners:
    hf: Callable[[], object]
    eager: Callable[[], object]
    compiled: Callable[[], object] | None
    meta: Callable[[], object]  # mt5fn on meta tensors, for FLOP counting
    func_grad: Callable[[], object] | None = None


def _inputs(case: Case, cfg: mt5fn.MT5Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    ids = torch.randint(2, cfg.vocab_size, (case.batch, case.source), generator=generator)
    targets = torch.randint(2, cfg.vocab_size, (case.batch, max(case.target, 1)), generator=generator)
    return ids.to(device), targets.to(device)


def _autocast(case: Case, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if case.autocast else contextlib.nullcontext()


def _hf_train(case: Case, hf: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor,
              device: torch.device) -> Callable[[], object]:
    weights = [p for p in hf.parameters() if p.requires_grad]

    def step():
        with _autocast(case, device):
            loss = hf(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)  # as mt5fn train's default --max-grad-norm
        grads = [p.grad for p in weights]
        hf.zero_grad(set_to_none=True)  # the next call starts clean; the grads live until the caller drops them
        return loss.detach(), grads
    return step


def _train_step(case: Case, params: dict, cfg: mt5fn.MT5Config, ids: torch.Tensor,
                targets: torch.Tensor) -> Callable[[], object]:
    """Exactly ``mt5fn train``'s step (single process): ``training.train_step`` with its default clipping."""
    batch = {"input_ids": ids, "labels": targets}
    autocast = torch.bfloat16 if case.autocast else None
    return lambda: mt5fn.training.train_step(params, cfg, [batch], max_grad_norm=1.0, autocast_dtype=autocast,
                                             checkpoint_blocks=case.checkpoint)


def _func_grad_step(params: dict, cfg: mt5fn.MT5Config, ids: torch.Tensor, targets: torch.Tensor
                    ) -> Callable[[], object]:
    tokens = targets.numel()

    def mean_loss(p):
        return mt5fn.loss(p, cfg, ids, targets, reduction="sum").float() / tokens

    step = torch.func.grad_and_value(mean_loss)
    return lambda: step(params)


def _mt5fn_callable(case: Case, params: dict, cfg: mt5fn.MT5Config, ids: torch.Tensor, targets: torch.Tensor,
                    compile_fn: Callable | None = None) -> Callable[[], object]:
    wrap = compile_fn or (lambda f: f)
    if case.kind == "train" and compile_fn is not None:
        step = wrap(torch.func.grad_and_value(mt5fn.loss))  # dynamo traces torch.func transforms whole
        return lambda: step(params, cfg, ids, targets)
    if case.kind == "train":
        return _train_step(case, params, cfg, ids, targets)
    if case.kind == "forward":
        fn = wrap(mt5fn.forward)
        return lambda: _no_grad(fn, params, cfg, ids, targets)
    fn = wrap(mt5fn.encode)
    return lambda: _no_grad(fn, params, cfg, ids)


def _no_grad(fn: Callable, *args):
    with torch.no_grad():
        return fn(*args)


def _unfused(fn: Callable[[], object]) -> Callable[[], object]:
    """Count FLOPs on the unfused loss (the textbook math both implementations perform); the
    fused path's in-place ``addmm_`` accumulations are invisible to the FLOP counter."""
    def run():
        from unittest import mock

        with mock.patch("mt5fn.model._model.fused_loss_applies", lambda: False):
            return fn()
    return run


def _meta_train(params: dict, cfg: mt5fn.MT5Config, ids: torch.Tensor, targets: torch.Tensor):
    """FLOPs of loss + gradients (the step's clipping is elementwise and not counted)."""
    names, leaves = zip(*[(k, t.detach().requires_grad_()) for k, t in mt5fn.flatten_params(params).items()])
    tree = mt5fn.unflatten_params(dict(zip(names, leaves)))

    def step():
        value = mt5fn.loss(tree, cfg, ids, targets)
        return torch.autograd.grad(value, leaves)
    return step


def build_runners(case: Case, hf: torch.nn.Module, params: dict, cfg: mt5fn.MT5Config, device: torch.device,
                  *, compile_mt5fn: bool, func_grad: bool = False) -> Runners:
    ids, targets = _inputs(case, cfg, device)
    if case.kind == "train":
        hf_fn = _hf_train(case, hf, ids, targets, device)
    elif case.kind == "forward":
        hf_fn = lambda: _no_grad(lambda: hf(input_ids=ids, decoder_input_ids=targets).logits)  # noqa: E731
    else:
        encoder = hf.get_encoder()
        hf_fn = lambda: _no_grad(lambda: encoder(input_ids=ids).last_hidden_state)  # noqa: E731
    eager = _mt5fn_callable(case, params, cfg, ids, targets)
    compiled = None
    if compile_mt5fn and not (case.autocast or case.checkpoint):
        compile_fn = lambda f: torch.compile(f, fullgraph=True, dynamic=False)  # noqa: E731
        compiled = _mt5fn_callable(case, params, cfg, ids, targets, compile_fn)
    meta_params = mt5fn.tree_map(lambda t: torch.empty_like(t, device="meta"), params)
    meta_ids, meta_targets = ids.to("meta"), targets.to("meta")
    if case.kind == "train":
        meta = _unfused(_meta_train(meta_params, cfg, meta_ids, meta_targets))
    else:
        meta = _unfused(_mt5fn_callable(case, meta_params, cfg, meta_ids, meta_targets))
    extra = None
    if func_grad and case.kind == "train" and not (case.autocast or case.checkpoint):
        extra = _func_grad_step(params, cfg, ids, targets)
    return Runners(hf_fn, eager, compiled, meta, extra)


@contextlib.contextmanager
def hf_mode(case: Case, hf: torch.nn.Module):
    """transformers set up for ``case``: gradients for train cases, and for checkpointed ones
    ``activation_checkpointing_enable()`` in train mode (its checkpointing only runs when training)
    with every dropout at 0, so the numbers stay those of the eval-mode model."""
    hf.requires_grad_(case.kind == "train")
    dropouts = [(m, m.p) for m in hf.modules() if isinstance(m, torch.nn.Dropout)]
    enable = getattr(hf, "activation_checkpointing_enable", None)  # transformers 5's name
    disable = getattr(hf, "activation_checkpointing_disable", None)
    if enable is None:
        enable = lambda kwargs: hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # noqa: E731
        disable = hf.gradient_checkpointing_disable
    if case.checkpoint:
        enable({"use_reentrant": False})
        for module, _ in dropouts:
            module.p = 0.0
        hf.train()
    try:
        yield
    finally:
        if case.checkpoint:
            disable()
            for module, p in dropouts:
                module.p = p
            hf.eval()
        hf.requires_grad_(False)


def _num_weights(cfg: mt5fn.MT5Config) -> int:
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    ffn = (3 if cfg.is_gated else 2) * d * cfg.d_ff
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)
    return embeddings + cfg.num_layers * (4 * d * inner + ffn) + cfg.num_decoder_layers * (8 * d * inner + ffn)


def estimated_bytes(case: Case, cfg: mt5fn.MT5Config, element_size: int) -> int:
    """A rough upper estimate of the memory one case needs (weights, grads, activations, logits)."""
    weights = _num_weights(cfg) * element_size
    d, d_ff, heads = cfg.d_model, cfg.d_ff, cfg.num_heads
    source, target = case.source, (0 if case.kind == "encode" else case.target)
    encoder = cfg.num_layers * case.batch * (source * (4 * d + 3 * d_ff) + 2 * heads * source ** 2)
    decoder = 0 if case.kind == "encode" else cfg.num_decoder_layers * case.batch * (
        target * (6 * d + 3 * d_ff) + 2 * heads * (target ** 2 + source * target))
    layers = cfg.num_layers + (0 if case.kind == "encode" else cfg.num_decoder_layers)
    logits = case.batch * target * cfg.vocab_size
    if case.kind == "train":
        held = (encoder + decoder) / (layers if case.checkpoint else 1)  # what the backward keeps
        return int(2 * weights + element_size * (2 * held + 3 * logits))
    return int(weights + element_size * (2 * (encoder + decoder) / layers + logits))
