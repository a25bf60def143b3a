"""``save_pretrained(params, cfg, "x.gguf")``: the GGUF file llama.cpp's converter would write.

Same tensor names, shapes, order (transformers' names sorted, as the
converter reads a safetensors file) and types as ``convert_hf_to_gguf.py
--outtype f32|f16|bf16|q8_0``: 1-D tensors (the norms) stay F32; Q8_0 falls
back to F16 for a tensor whose rows are not whole 32-value blocks (the
position tables). The ``t5.*`` (``t5encoder.*``) keys and, with a tokenizer
that has a ``spiece.model``, the ``tokenizer.ggml.*`` keys are the
converter's, vocabulary padded with ``[PAD{i}]`` up to the embedding's rows.
Rounding goes through ``gguf``'s own code (Q8_0, BF16) or numpy's float16
cast, as the converter's does, so bytes equal its bytes from float32 weights.
The file is written beside ``path`` and renamed over it: a failed save leaves
the old file whole.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _gguf_read as g
from ._atomic import atomic_write_file
from ._hf_names import to_hf_state_dict
from ..kernels._blocks_q8 import dequantize_q8_0, is_q8_0
from ..model._config import MT5Config

OUTTYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}  # general.file_type (llama_ftype)
_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_UNUSED = 5


def gguf_names(hf_names: list[str]) -> dict[str, str]:
    """transformers name -> llama.cpp name (``_gguf_read.hf_names`` backwards)."""
    out: dict[str, str] = {}
    top = {hf: name for name, hf in g._TOP.items()}
    for hf in hf_names:
        if hf in top:
            out[hf] = top[hf]
            continue
        stack, _, index, rest = hf.split(".", 3)
        prefix = f"{'enc' if stack == 'encoder' else 'dec'}.blk.{index}."
        part = rest.removesuffix(".weight")
        attn = {v: k for k, v in g._ATTN.items()}
        if part in attn and not (stack == "encoder" and part.startswith("layer.1.")):  # encoder layer 1: FFN
            out[hf] = prefix + attn[part] + ".weight"
            continue
        tail = part.split(".", 2)[-1] if part.startswith("layer.") else part
        ffn = {"DenseReluDense.wi_0": "ffn_gate", "DenseReluDense.wi_1": "ffn_up", "DenseReluDense.wi": "ffn_up",
               "DenseReluDense.wo": "ffn_down", "layer_norm": "ffn_norm"}
        out[hf] = prefix + ffn[tail] + ".weight"
    return out


def _array(gguf: Any, tensor: Any, outtype: str) -> tuple[np.ndarray, Any]:
    kind = gguf.GGMLQuantizationType
    data = tensor.detach().float().cpu().contiguous().numpy()  # the converter rounds from float32 too
    if data.ndim <= 1 or outtype == "f32":
        return data, kind.F32
    if outtype == "q8_0" and data.shape[-1] % 32 == 0:
        return gguf.quants.quantize(data, kind.Q8_0), kind.Q8_0
    if outtype == "bf16":
        return gguf.quants.quantize(data, kind.BF16), kind.BF16
    return data.astype(np.float16), kind.F16


def _tokenizer_keys(writer: Any, tokenizer: Any, cfg: MT5Config) -> None:
    import sentencepiece as spm

    model = getattr(getattr(tokenizer, "_backend", None), "model", None)
    if not model:
        raise ValueError("tokenizer: GGUF stores a SentencePiece vocabulary; this tokenizer has no spiece.model")
    sp = spm.SentencePieceProcessor(model_proto=model)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    size = max(cfg.vocab_size, sp.vocab_size())
    tokens = [f"[PAD{i}]" for i in range(size)]
    scores = [-10000.0] * size
    types = [_UNUSED] * size
    for i in range(sp.vocab_size()):
        tokens[i], scores[i] = sp.IdToPiece(i), sp.GetScore(i)
        types[i] = 2 if sp.IsUnknown(i) else 3 if sp.IsControl(i) else 5 if sp.IsUnused(i) else \
            6 if sp.IsByte(i) else 1
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(proto.normalizer_spec.remove_extra_whitespaces)
    if proto.normalizer_spec.precompiled_charsmap:
        writer.add_precompiled_charsmap(proto.normalizer_spec.precompiled_charsmap)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)


def _write(tmp: str, params: dict, cfg: MT5Config, outtype: str, tokenizer: Any, name: str) -> None:
    gguf = g.gguf_module()
    encoder_only = "decoder" not in params
    arch = "t5encoder" if encoder_only else "t5"
    state = to_hf_state_dict(params, cfg)
    drop = set(_ALIASES) | ({"lm_head.weight"} if encoder_only or "lm_head" not in params else set())
    hf = sorted(n for n in state if n not in drop and (not encoder_only or not n.startswith("decoder.")))
    names = gguf_names(hf)
    writer = gguf.GGUFWriter(tmp, arch)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(512)  # transformers' n_positions default; T5 has no position limit
    writer.add_embedding_length(cfg.d_model)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_block_count(cfg.num_layers)
    if not encoder_only:
        writer.add_decoder_block_count(cfg.num_decoder_layers)
    writer.add_head_count(cfg.num_heads)
    writer.add_key_length(cfg.d_kv)
    writer.add_value_length(cfg.d_kv)
    writer.add_layer_norm_eps(cfg.layer_norm_epsilon)
    writer.add_relative_attn_buckets_count(cfg.relative_attention_num_buckets)
    writer.add_layer_norm_rms_eps(cfg.layer_norm_epsilon)
    if not encoder_only:
        writer.add_decoder_start_token_id(cfg.decoder_start_token_id)
    writer.add_file_type(OUTTYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tokenizer is not None:
        _tokenizer_keys(writer, tokenizer, cfg)
    for hf_name in hf:
        array, qtype = _array(gguf, state[hf_name], outtype)
        writer.add_tensor(names[hf_name], array, raw_dtype=qtype if qtype not in (
            gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def save_gguf(params: dict, cfg: MT5Config, path: str, outtype: str, tokenizer: Any = None) -> None:
    if outtype not in OUTTYPES:
        raise ValueError(f"dtype for a GGUF file must be float32, float16, bfloat16 or 'q8_0', got {outtype!r}")
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0].replace("-", " ").replace("_", " ").title()
    atomic_write_file(path, lambda tmp: _write(tmp, params, cfg, outtype, tokenizer, name))


def dense_tree(tree: Any) -> Any:
    """``tree`` with Q8_0 leaves dequantized to float32: quantizing those again gives the same blocks
    (each block's largest value is +-127 times its scale), so a Q8_0 file read and written is unchanged."""
    if is_q8_0(tree):
        return dequantize_q8_0({"q8_0": tree["q8_0"], "scale": tree["scale"].float()})
    if isinstance(tree, dict):
        return {key: dense_tree(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [dense_tree(value) for value in tree]
    return tree
