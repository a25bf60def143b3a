"""``MT5Module``: a thin ``nn.Module`` facade over the parameter pytree.

Its ``named_parameters()`` are exactly the pytree's dotted paths
(``encoder.blocks.0.attn.q``), so ``torch.func.functional_call``,
``torch.func.stack_module_state``, DDP and FSDP2 (``fully_shard`` on the
module) see the same names the pure functions use. ``forward`` rebuilds the
pytree from the module's current attributes -- which ``functional_call``
swaps -- and calls :func:`mt5fn.forward`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._config import MT5Config
from ._model import forward, loss


class _Node(nn.Module):
    """A dict of the pytree: tensor leaves become parameters, children submodules."""

    def __init__(self, tree: dict) -> None:
        super().__init__()
        self._keys = list(tree)
        for key, value in tree.items():
            self.add_module(key, _build(value)) if not isinstance(value, Tensor) else \
                self.register_parameter(key, _as_parameter(value))

    def tree(self) -> dict:
        return {key: _read(getattr(self, key)) for key in self._keys}


class _List(nn.ModuleList):
    def tree(self) -> list:
        return [_read(child) for child in self]


def _as_parameter(tensor: Tensor) -> nn.Parameter:
    if isinstance(tensor, nn.Parameter):
        return tensor
    return nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


def _build(node: Any) -> nn.Module:
    if isinstance(node, dict):
        return _Node(node)
    if isinstance(node, (list, tuple)):
        return _List([_build(child) for child in node])
    raise TypeError(f"params: unexpected node of type {type(node).__name__}")


def _read(node: Any) -> Any:
    return node if isinstance(node, Tensor) else node.tree()


class MT5Module(_Node):
    """``nn.Module`` whose parameters are the pytree leaves (shared storage, no copy).

    ``module(input_ids, decoder_input_ids, attention_mask=None,
    decoder_attention_mask=None)`` returns logits like :func:`mt5fn.forward`;
    ``module(input_ids=..., labels=...)`` the loss like :func:`mt5fn.loss`;
    ``module.loss(input_ids, labels, attention_mask=None)`` like :func:`mt5fn.loss`;
    ``module.params()`` gives the pytree of the module's current tensors.
    """

    def __init__(self, cfg: MT5Config, params: dict) -> None:
        if not isinstance(cfg, MT5Config):
            raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
        if not isinstance(params, dict):
            raise TypeError(f"params must be the mt5fn parameter pytree (a dict), got {type(params).__name__}")
        super().__init__(params)
        self.cfg = cfg

    def params(self) -> dict:
        """The parameter pytree as the module currently holds it."""
        return self.tree()

    def forward(self, input_ids: Tensor, decoder_input_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None, *,
                labels: Tensor | None = None, **kwargs: Any) -> Tensor:
        """Logits as ``mt5fn.forward``; with ``labels``, ``mt5fn.loss`` instead (the decoder then reads
        ``shift_right(labels)``, and ``decoder_input_ids`` must be None), as transformers' models do."""
        if labels is not None:
            if decoder_input_ids is not None:
                raise ValueError("pass labels or decoder_input_ids, not both: with labels the decoder reads "
                                 "shift_right(labels)")
            return loss(self.tree(), self.cfg, input_ids, labels, attention_mask,
                        decoder_attention_mask=decoder_attention_mask, **kwargs)
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids (or labels) must be given")
        return forward(self.tree(), self.cfg, input_ids, decoder_input_ids, attention_mask,
                       decoder_attention_mask, **kwargs)

    def loss(self, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
             **kwargs: Any) -> Tensor:
        return loss(self.tree(), self.cfg, input_ids, labels, attention_mask, **kwargs)

    def extra_repr(self) -> str:
        return f"model_type={self.cfg.model_type!r}, d_model={self.cfg.d_model}, " \
               f"layers={self.cfg.num_layers}+{self.cfg.num_decoder_layers}"


def module_params(module: nn.Module) -> dict:
    """The pytree of an ``MT5Module`` (also through a DDP / compile wrapper)."""
    inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None) or module
    if not isinstance(inner, MT5Module):
        raise TypeError(f"module must wrap an MT5Module, got {type(module).__name__}")
    return inner.params()


__all__ = ["MT5Module", "module_params"]
