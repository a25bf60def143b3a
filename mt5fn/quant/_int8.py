"""Weight-only int8 with one scale per output channel (absmax, symmetric).

Each projection ``W`` (out, in) becomes ``{"int8": round(W / s), "scale": s}``
with ``s = max_j |W[i, j]| / 127`` per row ``i`` (Jacob et al. 2018's
symmetric per-channel scheme, as CTranslate2's and torchao's int8 weights):
four times fewer bytes for a decoding step to stream, one rounding error of at
most ``s / 2`` per weight. The form is one of ``functional.linear``'s
weight-leaf forms, so ``encode``, ``forward``, ``decode_step``, ``generate``
and ``prepare_decoding`` accept a quantized tree wherever they accept params.

What stays in float, and why:

* the embedding ``shared`` -- a lookup reads one row per token, so int8 would
  save memory but no time, and T5 embeddings carry large outliers (mT5 rows
  span 1e2); a tied head reads it as a projection, so a tied model gets an
  int8 ``lm_head`` leaf next to the float embedding;
* the RMSNorm scales and the relative position tables -- tiny, and added or
  multiplied elementwise rather than streamed.

The compute dtype is the scale's: bfloat16 where the CPU has native bf16
arithmetic (AVX512-BF16 / AMX; ``torch._weight_int8pack_mm`` then multiplies
int8 weights by bf16 activations without a dequantized copy), float32
elsewhere (dequantize, then ``F.linear``: the memory saving remains, the speed
does not). ``int8_compute_dtype()`` says which this machine gets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..kernels import INT8, SCALE, dequantize_int8, linear_form
from .. import checks as check
from ..model import MT5Config, check_config

SCHEMES = ("int8",)
_QMAX = 127
_CHUNK_ROWS = 8192


def int8_compute_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bfloat16 on CPUs with native bf16 (oneDNN reports it) and on CUDA devices with bf16; else float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def quantize_weight(weight: Tensor, compute_dtype: torch.dtype | None = None) -> dict:
    """(out, in) float weight -> ``{"int8": (out, in) int8, "scale": (out,) compute_dtype}``."""
    compute_dtype = compute_dtype or int8_compute_dtype(weight.device)
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)  # (out, in)
    scale = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)  # (out,)
    with torch.no_grad():
        # In row chunks: the float temporaries stay small, so loading a large head straight into
        # int8 (load_pretrained(..., quantize="int8")) never holds more than a chunk of it in float32.
        for start in range(0, weight.shape[0], _CHUNK_ROWS):
            rows = weight[start:start + _CHUNK_ROWS].detach().float()  # (c, in)
            step = rows.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / _QMAX  # (c,)
            q[start:start + _CHUNK_ROWS] = torch.round(rows / step[:, None]).clamp_(-_QMAX, _QMAX)
            scale[start:start + _CHUNK_ROWS] = step
    return {INT8: q, SCALE: scale.to(compute_dtype)}


def is_quantized(params: Any) -> bool:
    """True when any projection of ``params`` is an int8 form."""
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return linear_form(node) == "int8" or any(walk(child) for child in node.values())
        if isinstance(node, list):
            return any(walk(child) for child in node)
        return False
    return walk(params)


# Projection keys: every other leaf (norms, tables, the embedding) stays in float.
_ATTENTION = ("q", "k", "v", "o", "qkv")
_MLP = ("wi", "wi_0", "wi_1", "wi_01", "wo")


def is_projection_path(path: str) -> bool:
    """True for the dotted pytree paths ``quantize`` turns into int8 forms (``decoder.blocks.0.mlp.wo``)."""
    parts = path.split(".")
    if path == "lm_head" or parts[-1] == "cross_kv":
        return True
    return len(parts) >= 2 and ((parts[-2] in ("attn", "self_attn", "cross_attn") and parts[-1] in _ATTENTION)
                                or (parts[-2] == "mlp" and parts[-1] in _MLP))


def _map_projections(params: dict, fn) -> dict:
    """A new tree with ``fn(path, weight)`` at every projection (attention, FFN, fused cross K/V, head)."""
    def stack(name: str, node: dict) -> dict:
        out = dict(node)
        blocks = []
        for index, block in enumerate(node["blocks"]):
            new = dict(block)
            for sub in ("attn", "self_attn", "cross_attn"):
                if sub in block:
                    new[sub] = {key: fn(f"{name}.blocks.{index}.{sub}.{key}", value) if key in _ATTENTION
                                else value for key, value in block[sub].items()}
            new["mlp"] = {key: fn(f"{name}.blocks.{index}.mlp.{key}", value) if key in _MLP else value
                          for key, value in block["mlp"].items()}
            blocks.append(new)
        out["blocks"] = blocks
        if "cross_kv" in node:
            out["cross_kv"] = fn(f"{name}.cross_kv", node["cross_kv"])
        return out

    out = {key: value for key, value in params.items()}
    for name in ("encoder", "decoder"):
        if name in params:
            out[name] = stack(name, params[name])
    if "decoder" in params:  # the head: lm_head, or the tied embedding read as a projection
        out["lm_head"] = fn("lm_head", params.get("lm_head", params["shared"]))
    return out


def quantize(params: dict, cfg: MT5Config, scheme: str = "int8") -> dict:
    """``params`` with every projection in the int8 form (see the module docstring). Pure.

    Accepts float trees and ``prepare_decoding`` trees (whose fused leaves are
    quantized as one matrix each; column / oneDNN layouts are quantized from the
    weight they stand for). An already quantized leaf, an unknown scheme, or a
    non-float weight is an error naming it.
    """
    check_config(cfg)
    check.check_params(params, cfg, differentiates=False)  # makes new leaves; runs no product
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")

    def one(path: str, weight: Any) -> dict:
        form = linear_form(weight)
        if form == "int8":
            raise ValueError(f"params: {path} is already quantized (int8); quantize a float tree")
        if form == "columns":
            weight = torch.cat(weight["columns"], dim=1).t()  # (out, in)
        elif form == "onednn":
            raise ValueError(f"params: {path} is a oneDNN-packed layout; quantize the float tree and then "
                             "prepare_decoding the quantized one")
        return quantize_weight(weight)

    return _map_projections(params, one)


def dequantize(params: dict, cfg: MT5Config) -> dict:
    """The float tree an int8 tree stands for, in the embedding's dtype; float leaves pass through.
    (A tied model keeps the dequantized ``lm_head``: the head is then its own leaf.)"""
    check_config(cfg)
    check.check_params(params, cfg, differentiates=False)  # makes new leaves; runs no product
    dtype = params["shared"].dtype
    return _map_projections(params, lambda path, w: dequantize_int8(w).to(dtype) if linear_form(w) == "int8" else w)
