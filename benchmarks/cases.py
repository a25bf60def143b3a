"""The benchmark's cases and, for each, the callables of every implementation.

A case is a kind of work on a shape: ``forward`` (teacher-forced logits, no
grad), ``train`` (loss, then the gradient of every parameter) or ``encode``
(encoder only, no grad). Each builds three callables on the same inputs:
transformers, mt5fn eager and mt5fn under ``torch.compile(fullgraph=True)``,
plus one on meta tensors used only to count FLOPs.
"""

from __future__ import annotations

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
    group: str  # "main" or "scaling": which table the row goes to

    @property
    def shape(self) -> str:
        if self.kind == "encode":
            return f"{self.batch}x{self.source}"
        return f"{self.batch}x{self.source}->{self.target}"


def default_cases(*, batch: int, source: int, target: int, encoder_batch: int, scale_lengths: list[int],
                  scale_batches: list[int]) -> dict[str, Case]:
    cases = [Case("forward", "forward", batch, source, target, "main"),
             Case("train", "train", batch, source, target, "main"),
             Case("encoder", "encode", encoder_batch, source, 0, "main")]
    cases += [Case(f"scale-s{length}", "forward", 1, length, target, "scaling") for length in scale_lengths]
    cases += [Case(f"scale-b{size}", "forward", size, source, target, "scaling") for size in scale_batches]
    return {case.name: case for case in cases}


@dataclass
class Runners:
    hf: Callable[[], object]
    eager: Callable[[], object]
    compiled: Callable[[], object] | None
    meta: Callable[[], object]  # mt5fn on meta tensors, for FLOP counting


def _inputs(case: Case, cfg: mt5fn.MT5Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    ids = torch.randint(2, cfg.vocab_size, (case.batch, case.source), generator=generator)
    targets = torch.randint(2, cfg.vocab_size, (case.batch, max(case.target, 1)), generator=generator)
    return ids.to(device), targets.to(device)


def _hf_train(hf: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    weights = [p for p in hf.parameters() if p.requires_grad]

    def step():
        loss = hf(input_ids=ids, labels=labels).loss
        loss.backward()
        grads = [p.grad for p in weights]
        hf.zero_grad(set_to_none=True)  # the next call starts clean; the grads live until the caller drops them
        return loss.detach(), grads
    return step


def _mt5fn_callable(kind: str, params: dict, cfg: mt5fn.MT5Config, ids: torch.Tensor, targets: torch.Tensor,
                    compile_fn: Callable | None = None) -> Callable[[], object]:
    wrap = compile_fn or (lambda f: f)
    if kind == "train" and compile_fn is not None:
        step = wrap(torch.func.grad_and_value(mt5fn.loss))  # dynamo traces torch.func transforms whole
        return lambda: step(params, cfg, ids, targets)
    if kind == "train":
        # Eager: plain autograd on leaves, as loss.backward() is for transformers. (torch.func.grad
        # gives the same numbers but its wrapper tensors hold about twice the activation memory.)
        names, leaves = zip(*[(k, t.detach().requires_grad_()) for k, t in mt5fn.flatten_params(params).items()])
        tree = mt5fn.unflatten_params(dict(zip(names, leaves)))

        def step():
            value = mt5fn.loss(tree, cfg, ids, targets)
            return value.detach(), torch.autograd.grad(value, leaves)
        return step
    if kind == "forward":
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


def build_runners(case: Case, hf: torch.nn.Module, params: dict, cfg: mt5fn.MT5Config, device: torch.device,
                  *, compile_mt5fn: bool) -> Runners:
    ids, targets = _inputs(case, cfg, device)
    if case.kind == "train":
        hf_fn = _hf_train(hf, ids, targets)
    elif case.kind == "forward":
        hf_fn = lambda: _no_grad(lambda: hf(input_ids=ids, decoder_input_ids=targets).logits)  # noqa: E731
    else:
        encoder = hf.get_encoder()
        hf_fn = lambda: _no_grad(lambda: encoder(input_ids=ids).last_hidden_state)  # noqa: E731
    eager = _mt5fn_callable(case.kind, params, cfg, ids, targets)
    compiled = None
    if compile_mt5fn:
        compile_fn = lambda f: torch.compile(f, fullgraph=True, dynamic=False)  # noqa: E731
        compiled = _mt5fn_callable(case.kind, params, cfg, ids, targets, compile_fn)
    meta_params = mt5fn.tree_map(lambda t: torch.empty_like(t, device="meta"), params)
    meta = _unfused(_mt5fn_callable(case.kind, meta_params, cfg, ids.to("meta"), targets.to("meta")))
    return Runners(hf_fn, eager, compiled, meta)


def _num_weights(cfg: mt5fn.MT5Config) -> int:
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    ffn = (3 if cfg.is_gated else 2) * d * cfg.d_ff
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)
    return embeddings + cfg.num_layers * (4 * d * inner + ffn) + cfg.num_decoder_layers * (8 * d * inner + ffn)


def estimated_bytes(case: Case, cfg: mt5fn.MT5Config, element_size: int) -> int:
    """A rough upper estimate of the memory one case needs (weights, grads, activations, logits)."""
    weights = _num_weights(cfg) * element_size
    tokens = case.batch * (case.source + case.target)
    per_layer = tokens * (4 * cfg.d_model + 3 * cfg.d_ff) + case.batch * cfg.num_heads * (
        case.source ** 2 + case.target ** 2 + case.source * case.target)
    layers = cfg.num_layers + cfg.num_decoder_layers
    logits = 0 if case.kind == "encode" else case.batch * case.target * cfg.vocab_size
    if case.kind == "train":
        return 2 * weights + element_size * (layers * per_layer * 3 + logits * 3)
    return weights + element_size * (per_layer * 2 + logits)
