"""``load_pretrained`` for a ``.gguf`` file: config from the metadata and shapes, then the tensors.

See ``_gguf_read`` for the names and types. With ``dtype=None`` the tree
takes the embedding's stored dtype when it is F32/F16/BF16; a quantized
embedding makes the tree bfloat16 where the CPU computes in it natively, else
float32, except Q8_0: its projections stay 8-bit (``kernels._blocks_q8``'s
form, float32 scales) and the rest is float32 (an int8 times a float16 scale is
exact there). ``dtype=`` dequantizes every tensor instead. A float16 tree
keeps ``wo`` in float32 as every other load does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from . import _gguf_read as g
from ._hf_names import match_names
from ._infer import infer_config
from ..checks import preflight
from ..kernels._blocks_q8 import from_gguf_blocks
from ..model._config import MT5Config
from ..model._params import unflatten_params

_DECODER = ("decoder.", "lm_head.")


def _is_projection(path: str) -> bool:
    """A leaf ``linear`` reads (the embedding and position tables are looked up, so they are dequantized)."""
    return path == "lm_head" or path.rsplit(".", 1)[-1] in ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


def _cpu_has_bf16() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()
    return "AVX512" in capability or "AMX" in capability or "SVE" in capability


def gguf_config(reader: Any, names: dict[str, Any], file: str) -> tuple[MT5Config, str]:
    """The config the file describes, and what had to be assumed (for the warning)."""
    shapes = {hf: g.shape(t) for hf, t in names.items()}
    cfg, _ = infer_config(shapes, file)

    arch = g.field(reader, "general.architecture")

    def key(name: str, default: Any) -> Any:  # model keys are under the architecture's name (t5. / t5encoder.)
        value = g.field(reader, name.replace("t5.", f"{arch}.", 1) if name.startswith("t5.") else name, default)
        return default if value is None else value

    eps = float(f"{float(key('t5.attention.layer_norm_epsilon', cfg.layer_norm_epsilon)):.7g}")  # float32 in file
    values = dict(layer_norm_epsilon=eps, num_heads=int(key("t5.attention.head_count", cfg.num_heads)),
                  d_kv=int(key("t5.attention.key_length", cfg.d_kv)),
                  decoder_start_token_id=int(key("t5.decoder_start_token_id", cfg.pad_token_id)),
                  eos_token_id=int(key("tokenizer.ggml.eos_token_id", cfg.eos_token_id)),
                  pad_token_id=int(key("tokenizer.ggml.padding_token_id", cfg.pad_token_id)))
    try:
        cfg = cfg.replace(**values)
    except ValueError as error:
        raise ValueError(f"{file}: the GGUF metadata gives no valid config ({error})") from None
    gated = cfg.feed_forward_proj.startswith("gated")
    assumed = (f"relative_attention_max_distance=128, feed_forward_proj={cfg.feed_forward_proj!r} "
               f"({'gelu, not silu' if gated else 'from the absent ffn_gate'}), scale_decoder_outputs following "
               f"the tying ({'tied' if cfg.tie_word_embeddings else 'untied'})")
    return cfg, assumed


def _model_dtype(embed: Any, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    kind = g.gguf_module().GGMLQuantizationType
    stored = {kind.F32: torch.float32, kind.F16: torch.float16, kind.BF16: torch.bfloat16}
    if embed.tensor_type in stored:
        return stored[embed.tensor_type]
    if embed.tensor_type == kind.Q8_0:
        return torch.float32
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _preflight(file: str, plan: dict[str, str], names: dict[str, Any], model_dtype: torch.dtype,
               dtype: torch.dtype | None, device: torch.device | None) -> None:
    """Refuse before reading when the dequantized tensors cannot fit (a lying header can claim any shape)."""
    kind = g.gguf_module().GGMLQuantizationType
    mapped = (kind.F32, kind.F16, kind.BF16)
    itemsize = torch.empty((), dtype=model_dtype).element_size()
    buffers = [(f"tensor {names[hf].name!r}", g.shape(names[hf]), itemsize) for path, hf in plan.items()
               if names[hf].tensor_type not in mapped and not (dtype is None and _is_projection(path))]
    if buffers:
        preflight.check_buffers("load_pretrained", f"{file} (dequantized to {str(model_dtype).removeprefix('torch.')})",
                                buffers, device)


def load_gguf(file: str, dtype: torch.dtype | None, device: torch.device | None, encoder_only: bool,
              given: MT5Config | None) -> tuple[MT5Config, dict]:
    reader = g.open_reader(file)
    arch = g.architecture(reader, file)
    names = g.hf_names(reader, file)
    encoder_only = encoder_only or arch == "t5encoder"
    if "shared.weight" not in names:
        raise ValueError(f"{file}: no token_embd.weight (the embedding)")
    cfg = given
    if cfg is None:
        cfg, assumed = gguf_config(reader, names, file)
        warnings.warn(f"{file}: GGUF {arch!r}: model_type={cfg.model_type!r}, vocab_size={cfg.vocab_size}, "
                      f"d_model={cfg.d_model}, d_kv={cfg.d_kv}, d_ff={cfg.d_ff}, num_layers={cfg.num_layers}, "
                      f"num_heads={cfg.num_heads}. Assumed (the format does not carry them): {assumed}. Pass "
                      "config= (an MT5Config, a preset name or a config.json) to override.", UserWarning,
                      stacklevel=3)
    shapes = {hf: g.shape(t) for hf, t in names.items()}
    try:
        plan = match_names(shapes, cfg, encoder_only=encoder_only)
    except ValueError as error:
        lines = str(error).splitlines()
        raise ValueError("\n".join([f"weights in {file} do not match the config:", *lines[1:]])) from None
    model_dtype = _model_dtype(names["shared.weight"], dtype)
    _preflight(file, plan, names, model_dtype, dtype, device)
    flat: dict[str, torch.Tensor] = {}
    for path, hf in plan.items():  # only what the plan names: encoder_only touches no decoder bytes
        want = torch.float32 if model_dtype == torch.float16 and path.endswith(".mlp.wo") else model_dtype
        q8_0 = names[hf].tensor_type == g.gguf_module().GGMLQuantizationType.Q8_0
        if dtype is None and _is_projection(path) and q8_0:
            raw = torch.from_numpy(np.asarray(names[hf].data))  # (out, in / 32 * 34) uint8 blocks, mapped
            leaf = from_gguf_blocks(raw.reshape(g.shape(names[hf])[0], -1), model_dtype)  # stays 8-bit
            flat[path] = {k: v.to(device) for k, v in leaf.items()} if device is not None else leaf
            continue
        tensor = g.read_tensor(names[hf], want, file)
        if tensor.dtype != want or device is not None:
            tensor = tensor.to(device=device, dtype=want)
        flat[path] = tensor
    tied = "lm_head" not in flat
    params = unflatten_params(flat)
    if not encoder_only:
        cfg = cfg.replace(tie_word_embeddings=tied)
    return cfg, params
