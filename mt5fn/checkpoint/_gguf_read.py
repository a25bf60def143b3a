"""GGUF files (llama.cpp's format) as T5 checkpoints: names, config and tensors.

llama.cpp's ``convert_hf_to_gguf.py`` writes T5, mT5 and UMT5 as
``general.architecture = t5`` (``t5encoder`` for encoder-only models) with
its own tensor names (``token_embd``, ``enc.blk.N.attn_q``, ``ffn_gate`` /
``ffn_up`` / ``ffn_down``, ``dec.blk.N.cross_attn_*``, ``output``); this
module maps them to transformers' names so the rest of the checkpoint room
reads them like any other file.

The config comes from the ``t5.*`` keys and the tensors (``infer_config``):
gated by ``ffn_gate``, tied by the absence of ``output``, UMT5 by a position
table in every block. What the format does not carry is assumed and warned
about by the caller: ``relative_attention_max_distance`` = 128, ``gelu_new``
for a gated FFN (T5 v1.1 / mT5 / UMT5 all use it), and ``scale_decoder_outputs``
following the tying as transformers does.

Tensor types: F32/F16/BF16 are read as stored (memory-mapped); every
quantized type the ``gguf`` package can dequantize is dequantized with its
own code, in row chunks, to the requested dtype. ``gguf`` is an optional
extra (``pip install 'mt5fn[gguf]'``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAGIC = b"GGUF"
ARCHITECTURES = ("t5", "t5encoder")
# llama.cpp's per-block names -> transformers' (stack-relative); the FFN of a decoder block is layer 2.
_ATTN = {"attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k",
         "attn_v": "layer.0.SelfAttention.v", "attn_o": "layer.0.SelfAttention.o",
         "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias", "attn_norm": "layer.0.layer_norm",
         "cross_attn_q": "layer.1.EncDecAttention.q", "cross_attn_k": "layer.1.EncDecAttention.k",
         "cross_attn_v": "layer.1.EncDecAttention.v", "cross_attn_o": "layer.1.EncDecAttention.o",
         "cross_attn_norm": "layer.1.layer_norm"}
_FFN = {"ffn_gate": "DenseReluDense.wi_0", "ffn_down": "DenseReluDense.wo", "ffn_norm": "layer_norm"}
_BLOCK = re.compile(r"^(enc|dec)\.blk\.(\d+)\.([a-z_]+)\.weight$")
_TOP = {"token_embd.weight": "shared.weight", "output.weight": "lm_head.weight",
        "enc.output_norm.weight": "encoder.final_layer_norm.weight",
        "dec.output_norm.weight": "decoder.final_layer_norm.weight"}
# Rows dequantized at a time: the peak stays near the result, not a float32 copy of the whole tensor.
_CHUNK_BYTES = 1 << 24


def gguf_module() -> Any:
    try:
        import gguf
    except ImportError as error:
        raise ImportError(f"reading or writing GGUF files needs the gguf package: pip install 'mt5fn[gguf]' "
                          f"({error})") from None
    return gguf


def is_gguf(file: str) -> bool:
    with open(file, "rb") as handle:
        return handle.read(4) == MAGIC


def open_reader(file: str) -> Any:
    """``gguf.GGUFReader`` of ``file`` (memory-mapped: nothing big is read); a malformed file -> ValueError."""
    gguf = gguf_module()
    if not is_gguf(file):
        raise ValueError(f"{file}: not a GGUF file (it does not start with b'GGUF')")
    try:
        reader = gguf.GGUFReader(file, "c")  # copy-on-write map: writable views, file untouched
    except Exception as error:  # the reader raises whatever its parsing hits on a lying header
        raise ValueError(f"{file}: not a readable GGUF file: {type(error).__name__}: {error}") from None
    size = os.path.getsize(file)
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.nbytes != tensor.n_bytes:
            raise ValueError(f"{file}: tensor {tensor.name!r} ends at byte {end}, past the file's {size} bytes "
                             "(truncated or a lying header)")
    return reader


def field(reader: Any, key: str, default: Any = None) -> Any:
    """A metadata value (a scalar, string or list), ``default`` when absent."""
    item = reader.fields.get(key)
    if item is None:
        return default
    return item.contents()


def architecture(reader: Any, file: str) -> str:
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{file}: a GGUF file of architecture {arch!r}; mt5fn reads T5-family files "
                         f"(general.architecture {' or '.join(map(repr, ARCHITECTURES))})")
    return arch


def hf_names(reader: Any, file: str) -> dict[str, Any]:
    """``{transformers name: gguf ReaderTensor}``; a name llama.cpp's T5 layout does not have is an error."""
    names = {tensor.name for tensor in reader.tensors}
    gated = any(name.endswith(".ffn_gate.weight") for name in names)
    out: dict[str, Any] = {}
    for tensor in reader.tensors:
        name = tensor.name
        hf = _TOP.get(name)
        match = _BLOCK.match(name)
        if match:
            stack, index, part = match.groups()
            prefix = f"{'encoder' if stack == 'enc' else 'decoder'}.block.{index}."
            ffn_layer = "layer.1." if stack == "enc" else "layer.2."
            if part in _ATTN and (stack == "dec" or not part.startswith("cross_")):
                hf = prefix + _ATTN[part] + ".weight"
            elif part == "ffn_up":
                hf = prefix + ffn_layer + ("DenseReluDense.wi_1" if gated else "DenseReluDense.wi") + ".weight"
            elif part in _FFN:
                hf = prefix + ffn_layer + _FFN[part] + ".weight"
        if hf is None:
            raise ValueError(f"{file}: tensor {name!r} is not part of llama.cpp's T5 layout")
        out[hf] = tensor
    return out


def shape(tensor: Any) -> tuple[int, ...]:
    """PyTorch's (rows first) shape; GGUF lists dimensions innermost first."""
    return tuple(int(d) for d in reversed(tensor.shape.tolist()))


def read_tensor(tensor: Any, dtype: torch.dtype | None, file: str) -> Tensor:
    """The tensor as PyTorch: F32/F16 memory-mapped, BF16 reinterpreted, the rest dequantized by ``gguf``
    (in row chunks) to ``dtype`` (float32 when None)."""
    gguf = gguf_module()
    kind = gguf.GGMLQuantizationType
    qtype = tensor.tensor_type
    rows = shape(tensor)
    if qtype in (kind.F32, kind.F16):
        out = torch.from_numpy(np.asarray(tensor.data)).reshape(rows)
    elif qtype == kind.BF16:
        out = torch.from_numpy(np.asarray(tensor.data).view(np.int16)).reshape(rows).view(torch.bfloat16)
    else:
        data = np.asarray(tensor.data)  # (rows..., bytes per row)
        flat = data.reshape(-1, data.shape[-1])
        want = dtype or torch.float32
        out = torch.empty((flat.shape[0], rows[-1]), dtype=want)  # (rows, columns)
        step = max(1, _CHUNK_BYTES // max(1, rows[-1] * 4))
        try:
            for start in range(0, flat.shape[0], step):
                part = gguf.quants.dequantize(flat[start:start + step], qtype)  # (step, columns) float32
                out[start:start + step] = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
        except NotImplementedError:
            raise ValueError(f"{file}: tensor {tensor.name!r} has type {qtype.name}, which the gguf package "
                             "cannot dequantize") from None
        out = out.reshape(rows)
    return out if dtype is None or out.dtype == dtype else out.to(dtype)


def type_counts(reader: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return counts


def describe_gguf(path: str) -> str | None:
    """For a GGUF file: its name, architecture and tensor types with counts (``Q8_0 x 37, F32 x 17``);
    None for anything else."""
    if not os.path.isfile(path) or not is_gguf(path):
        return None
    reader = open_reader(path)
    types = ", ".join(f"{name} x {count}" for name, count in sorted(type_counts(reader).items()))
    return f"GGUF {os.path.basename(path)}, architecture {field(reader, 'general.architecture')!r}, tensors: {types}"
