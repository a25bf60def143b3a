"""Where LoRA can attach: every attention and feed-forward projection of both stacks.

A *site* is one projection weight of the pytree, named three ways: its pytree
path (``("decoder", 1, "cross_attn", "q")``), its dotted path
(``"decoder.blocks.1.cross_attn.q"``, as ``mt5fn.flatten_params`` writes it)
and its module name in transformers' T5 / mT5 / UMT5
(``"decoder.block.1.layer.1.EncDecAttention.q"``), which is what PEFT's
``target_modules`` match and its safetensors keys spell.

Target names are those short module names, as PEFT's ``target_modules`` use
them for T5: ``q``, ``k``, ``v``, ``o`` select that projection in every
attention (encoder self-attention, decoder self- and cross-attention);
``wi`` / ``wi_0`` / ``wi_1`` / ``wo`` the feed-forward's. ``wi`` on a gated
feed-forward (v1.1, mT5, UMT5) means both of its input projections,
``wi_0`` and ``wi_1``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ..model import MT5Config

ATTENTION_NAMES = ("q", "k", "v", "o")
TARGET_NAMES = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")

# (pytree sublayer, transformers layer index, transformers module) per stack.
_SUBLAYERS = {
    "encoder": (("attn", 0, "SelfAttention"), ("mlp", 1, "DenseReluDense")),
    "decoder": (("self_attn", 0, "SelfAttention"), ("cross_attn", 1, "EncDecAttention"),
                ("mlp", 2, "DenseReluDense")),
}
STACKS = tuple(_SUBLAYERS)


@dataclasses.dataclass(frozen=True)
class Site:
    """One projection LoRA can adapt: its pytree path, transformers module name and (out, in)."""

    path: tuple[Any, ...]  # ("encoder", block, sublayer, name)
    hf_name: str
    shape: tuple[int, int]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def dotted(self) -> str:
        stack, block, sublayer, name = self.path
        return f"{stack}.blocks.{block}.{sublayer}.{name}"


def ffn_names(cfg: MT5Config) -> tuple[str, ...]:
    return ("wi_0", "wi_1", "wo") if cfg.is_gated else ("wi", "wo")


def sublayer_names(cfg: MT5Config, stack: str) -> dict[str, tuple[str, ...]]:
    """The sublayers of a block of ``stack`` and the projection names each holds."""
    return {sub: (ATTENTION_NAMES if sub != "mlp" else ffn_names(cfg)) for sub, _, _ in _SUBLAYERS[stack]}


def sites(cfg: MT5Config, stacks: Iterable[str] = STACKS) -> list[Site]:
    """Every site of the model ``cfg`` describes, in pytree order."""
    d, inner, d_ff = cfg.d_model, cfg.inner_dim, cfg.d_ff
    shapes = {"q": (inner, d), "k": (inner, d), "v": (inner, d), "o": (d, inner),
              "wi": (d_ff, d), "wi_0": (d_ff, d), "wi_1": (d_ff, d), "wo": (d, d_ff)}
    found = []
    for stack in stacks:
        depth = cfg.num_layers if stack == "encoder" else cfg.num_decoder_layers
        for block in range(depth):
            for sub, layer, module in _SUBLAYERS[stack]:
                for name in (ATTENTION_NAMES if sub != "mlp" else ffn_names(cfg)):
                    found.append(Site((stack, block, sub, name),
                                      f"{stack}.block.{block}.layer.{layer}.{module}.{name}", shapes[name]))
    return found


def expand_targets(targets: Any, cfg: MT5Config) -> tuple[str, ...]:
    """Validated projection names (``wi`` on a gated feed-forward becomes ``wi_0``, ``wi_1``)."""
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets:
        raise ValueError(f"targets must be a non-empty list or tuple of names from {list(TARGET_NAMES)}, "
                         f"got {targets!r}")
    expanded: list[str] = []
    for target in targets:
        if target not in TARGET_NAMES:
            raise ValueError(f"targets: unknown target {target!r}; LoRA targets are {list(TARGET_NAMES)}")
        names = [target]
        if target == "wi" and cfg.is_gated:
            names = ["wi_0", "wi_1"]
        elif target in ("wi_0", "wi_1") and not cfg.is_gated:
            raise ValueError(f"targets: {target!r} does not fit the model: its feed-forward "
                             f"({cfg.feed_forward_proj}) is not gated and has one input projection, 'wi'")
        for name in names:
            if name in expanded:
                raise ValueError(f"targets: {name!r} is named twice in {list(targets)}")
            expanded.append(name)
    return tuple(expanded)
