"""float8 weights (``float8_e4m3fn`` / ``float8_e5m2``) with optional per-tensor scales.

Diffusion tools ship T5 text encoders as float8 files. Two conventions:

* plain casts: ``q.weight`` is float8, dequantized by a cast (exact: every
  float8 value is a bfloat16, float16 and float32 value);
* scaled files: ``q.weight`` float8 plus ``q.scale_weight`` (ComfyUI's
  "scaled fp8", marked by a ``scaled_fp8`` tensor) or ``q.weight_scale``
  (compressed-tensors / llm-compressor), a float32 scalar, or one value per
  output row. The weight is ``float32(q) * scale``, computed in float32 and
  then rounded once to the requested dtype. Activation scales
  (``input_scale``, ``scale_input``) only matter to float8 matmuls and are
  ignored.

Writing (``save_pretrained(..., dtype=torch.float8_e4m3fn)``) stores every
projection as ``float8_e4m3fn`` with a per-tensor float32 ``scale_weight``
``= amax / 448`` (the largest e4m3 value), and keeps the embedding, the head,
norms and position tables in their dtype, as ComfyUI's converters do. The
loss is e4m3's rounding: 3 mantissa bits, a relative error of at most 2^-4
per weight (about 2.6% RMS); see docs/encoder.md for its effect on encoder outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
MARKERS = ("scaled_fp8",)
IGNORED_SUFFIXES = (".input_scale", ".scale_input", ".scaled_fp8", ".comfy_quant")


def scale_names(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """``({weight name: its scale's name}, names to ignore)`` among ``names``.

    ``X.scale_weight`` / ``X.weight_scale`` belongs to ``X.weight``; a scale
    whose weight is absent is left in place (and is then reported as an
    unexpected tensor).
    """
    present = set(names)
    scales: dict[str, str] = {}
    for name in names:
        for suffix in SCALE_SUFFIXES:
            if name.endswith(suffix):
                weight = name[: -len(suffix)] + ".weight"
                if weight in present:
                    if weight in scales:
                        raise ValueError(f"{weight}: has two scales ({scales[weight]!r} and {name!r})")
                    scales[weight] = name
    ignored = [n for n in names if n.split(".")[-1] in MARKERS or n.endswith(IGNORED_SUFFIXES)]
    return scales, ignored


def check_scale(name: str, scale_name: str, scale_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> None:
    """A scale is one value (any shape with one element) or one per output row: ``(out,)`` / ``(out, 1)``."""
    numel = 1
    for size in scale_shape:
        numel *= size
    rows = weight_shape[0] if weight_shape else None
    if numel == 1 or (rows is not None and scale_shape in ((rows,), (rows, 1))):
        return
    raise ValueError(f"{scale_name}: scale of shape {scale_shape} does not fit {name} of shape {weight_shape}; "
                     f"expected one value (a per-tensor scale) or one per output row ({rows},)")


def dequantize(weight: Tensor, scale: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``float32(weight) * scale`` (per tensor or per row), rounded once to ``dtype``."""
    if scale is None:
        return weight.to(dtype)
    value = weight.to(torch.float32)
    factor = scale.to(torch.float32)
    factor = factor.reshape(()) if factor.numel() == 1 else factor.reshape(-1, *([1] * (value.dim() - 1)))
    return (value * factor).to(dtype)


def quantize_e4m3(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(float8_e4m3fn weight, float32 scalar scale)`` with ``scale = amax / 448`` (1 for a zero tensor)."""
    value = weight.detach().to(torch.float32)
    amax = value.abs().max()
    scale = torch.where(amax > 0, amax / torch.finfo(torch.float8_e4m3fn).max, torch.ones(()))
    return (value / scale).to(torch.float8_e4m3fn), scale.reshape(())
