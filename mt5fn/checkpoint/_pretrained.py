"""Hugging Face checkpoints and single weight files: ``load_pretrained`` and ``save_pretrained``.

A checkpoint directory holds ``config.json`` and weights in one of the
layouts transformers writes, tried in this order:

* ``model.safetensors``
* ``model.safetensors.index.json`` + ``model-0000i-of-0000n.safetensors`` shards
* ``pytorch_model.bin``
* ``pytorch_model.bin.index.json`` + ``pytorch_model-0000i-of-0000n.bin`` shards

Encoder-only checkpoints (transformers' ``T5EncoderModel``,
``MT5EncoderModel``, ``UMT5EncoderModel``) load as a tree with ``shared`` and
``encoder`` only; ``encoder_only=True`` loads that part of a full checkpoint
without reading the decoder's bytes. A single ``.safetensors`` (or ``.bin``)
file, as diffusion tools ship text encoders, loads too (``_single_file``),
with its config given or inferred from the shapes (``_infer``); float8
weights are dequantized (``_fp8``). A ``.gguf`` file (or a folder holding
exactly one and no ``config.json``) is read as llama.cpp's converter writes
T5 (``_gguf_load``), and a ``path`` ending in ``.gguf`` saves one
(``_gguf_write``).

safetensors is memory-mapped (no copy until a dtype or device change asks for
one). ``.bin`` pickles are read only with ``torch.load(weights_only=True)``:
a pickle that would build anything but tensors is refused, never executed.
No file is read through a link that leaves the checkpoint (``_closed``).

float16 follows transformers' ``_keep_in_fp32_modules = ["wo"]``: a model
loaded (or saved) in float16 keeps every FFN output projection ``wo`` in
float32, so T5 v1.1-style activations, which exceed float16's range in the
FFN, do not overflow. Any other dtype is applied to every tensor.

Saving writes ``config.json``, ``generation_config.json`` (full models) and
safetensors (each tensor once: the embedding aliases and a tied head are
dropped, as transformers 5 does), sharded above ``max_shard_size``. The write
is crash-safe (``_atomic``): a failed or killed save leaves the previous
checkpoint at ``path`` whole.

Tying. transformers 5 forces ``tie_word_embeddings=True`` into every
T5-family config, and at load time ties ``lm_head`` to ``shared`` only when
the checkpoint lacks ``lm_head.weight`` or holds the same values there; an
``lm_head.weight`` that differs stays untied. So an untied model is saved
with its own ``lm_head.weight``; ``config.json`` also says
``tie_word_embeddings: false`` for older readers, and for ``t5``/``umt5``
states ``scale_decoder_outputs`` explicitly (transformers 5 would otherwise
derive the output scaling from the tying flag).
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from . import _fp8
from . import _safetensors_io as st
from ._atomic import atomic_directory, check_input_path, recover_directory
from ._closed import _identity, checked_path
from ._folder_names import TOKENIZER_FILES
from ._hf_names import _same_tensor, has_decoder_names, has_encoder_names, match_names, to_hf_state_dict
from ._infer import infer_config
from ._single_file import hf_names
from ._weights import Weights, open_directory, open_file
from ..checks import check_bool
from ..model._config import MT5Config, read_config_json
from ..model._params import flatten_params, unflatten_params

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
_FLOAT_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "double": torch.float64,
}
_SAVE_DTYPES = {**_FLOAT_DTYPES, "float8_e4m3fn": torch.float8_e4m3fn, "fp8": torch.float8_e4m3fn}
ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
# Files a save rewrites; anything else in an existing target directory is kept.
_WEIGHT_FILE = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def resolve_dtype(dtype: Any, name: str = "dtype", table: dict[str, torch.dtype] = _FLOAT_DTYPES) -> torch.dtype | None:
    """``None`` or a floating dtype (``torch.bfloat16`` or ``"bfloat16"``); anything else is a ValueError."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.").lower()
        if key in table:
            return table[key]
    elif isinstance(dtype, torch.dtype) and dtype in table.values():
        return dtype
    names = ", ".join(sorted({str(d).removeprefix("torch.") for d in table.values()}))
    raise ValueError(f"{name} must be a floating dtype that weights can be held in ({names}), got {dtype!r}")


def is_wo(path: str) -> bool:
    """The FFN output projections transformers keeps in float32 in a float16 model."""
    return path.endswith(".mlp.wo")


# --------------------------------------------------------------------------- load
def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a checkpoint directory or a weights file, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.lexists(path):
        recover_directory(path)  # a save killed mid-swap left the directory under a hidden name
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no such checkpoint directory or file {path!r}")
    check_input_path(path, "a checkpoint directory or a weights file")
    return path


def read_config(path: str) -> MT5Config:
    """``MT5Config`` from ``path/config.json``; errors name the file. A ``generation_config.json`` beside it
    gives the end-of-sequence ids when it names them, as transformers' ``generate`` reads them from there
    (an int or a list, ``[3, 1]``: generation stops at any)."""
    file = checked_path(path, CONFIG_NAME)
    config = read_config_json(file)
    try:
        cfg = MT5Config.from_hf(config)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{file}: {error}") from None
    return _generation_eos(path, cfg)


def _generation_eos(path: str, cfg: MT5Config) -> MT5Config:
    file = checked_path(path, GENERATION_CONFIG_NAME)
    if not os.path.isfile(file):
        return cfg
    generation = read_config_json(file)
    eos = generation.get("eos_token_id") if isinstance(generation, dict) else None
    if eos is None:
        return cfg
    try:
        return cfg.replace(eos_token_id=tuple(eos) if isinstance(eos, list) else eos)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{file}: eos_token_id {eos!r}: {error}") from None


def _architectures(path: str) -> list[str]:
    file = checked_path(path, CONFIG_NAME)
    value = read_config_json(file).get("architectures")
    return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []


def _given_config(config: Any) -> MT5Config:
    """``config=``: an MT5Config, a preset name, or a config.json (or a folder holding one)."""
    if isinstance(config, MT5Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        text = os.fspath(config)
        if os.path.exists(text):
            file = os.path.join(text, CONFIG_NAME) if os.path.isdir(text) else text
            try:
                return MT5Config.from_hf(read_config_json(file))
            except (ValueError, TypeError) as error:
                raise ValueError(f"config: {file}: {error}") from None
        try:
            return MT5Config.preset(text)
        except ValueError as error:
            raise ValueError(f"config: {text!r} is neither a config.json file nor a preset ({error})") from None
    raise TypeError(f"config must be an MT5Config, a preset name or a config.json path, got {type(config).__name__}")


def _float_default(weights: Weights) -> torch.dtype:
    """What float8 tensors become with ``dtype=None``: the dtype most of the file's other floating
    tensors have (norms and embeddings are rarely float8), else float32."""
    counts = collections.Counter(info.dtype for info in weights.info.values()
                                 if isinstance(info.dtype, torch.dtype) and info.dtype.is_floating_point
                                 and info.dtype not in _fp8.FLOAT8)
    return counts.most_common(1)[0][0] if counts else torch.float32


def _with_scales(weights: Weights, names: dict[str, str], scales: dict[str, str]) -> tuple[Weights, dict[str, str]]:
    """``weights`` under transformers' names (``names``: hf -> stored), with float8 scales set aside."""
    renamed = weights.renamed({**names, **{f"{hf}::scale": stored for hf, stored in scales.items()}})
    scale_of = {hf: f"{hf}::scale" for hf in scales}
    for hf, key in scale_of.items():
        _fp8.check_scale(hf, scales[hf], renamed.info[key].shape, renamed.info[hf].shape)
    for key in scale_of.values():
        renamed.info.pop(key)  # loadable, but not a tensor of the model
    return renamed, scale_of


def _directory_weights(path: str) -> tuple[Weights, dict[str, str]]:
    weights = open_directory(path)
    names = list(weights.info)
    scales, ignored = _fp8.scale_names(names)
    skip = set(ignored) | set(scales.values())
    return _with_scales(weights, {n: n for n in names if n not in skip}, scales)


def _file_weights(file: str) -> tuple[Weights, dict[str, str]]:
    weights = Weights([open_file(file)], file)
    names, scales = hf_names(list(weights.info), file, weights.shapes())
    return _with_scales(weights, names, scales)


def _check_has_encoder(weights: Weights) -> None:
    names = list(weights.info)
    if has_decoder_names(names) and not has_encoder_names(names):
        raise ValueError(f"{weights.description}: holds decoder weights (decoder.block.*) but no encoder "
                         "(encoder.block.*); mt5fn needs the encoder")


# Openings of a directory in a row that concurrent saves may interrupt before ``load_pretrained`` gives up.
_OPEN_ATTEMPTS = 5


def _open_directory(path: str, given: MT5Config | None, encoder_only: bool
                    ) -> tuple[MT5Config, Weights, dict[str, str], bool, str]:
    """Config and opened weight files of one version of the directory.

    A save may swap the directory while it is being opened; every file is
    opened (and memory-mapped) from the same directory, checked by its inode
    before and after, else the opening is repeated -- so a reader never mixes
    the config of one version with the shards of another.
    """
    for attempt in range(_OPEN_ATTEMPTS):
        before = _identity(path)
        try:
            cfg = given or read_config(path)
            architectures = _architectures(path) if os.path.isfile(os.path.join(path, CONFIG_NAME)) else []
            weights, scale_of = _directory_weights(path)
        except (OSError, ValueError):
            if attempt < _OPEN_ATTEMPTS - 1 and _identity(path) != before:
                continue  # swapped (and the old version deleted) under us: read the new one
            raise
        if _identity(path) == before:
            break
    else:  # every opening saw a swap: nothing read is known to be one version
        raise RuntimeError(f"{path}: another save replaced the directory during each of {_OPEN_ATTEMPTS} readings "
                           "in a row; load it when the writers pause")
    _check_has_encoder(weights)
    if any(name.endswith("EncoderModel") for name in architectures):
        encoder_only = True  # transformers' T5EncoderModel & co. read only the encoder too
    config_file = os.path.join(path, CONFIG_NAME) if given is None else "the given config"
    return cfg, weights, scale_of, encoder_only, config_file


def load_pretrained(path_or_single_file: str | os.PathLike, dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None, *, encoder_only: bool = False,
                    config: Any = None, quantize: str | None = None) -> tuple[MT5Config, dict]:
    """``(cfg, params)`` from a Hugging Face checkpoint directory or a single weights file.

    ``dtype=None`` keeps the stored dtype (and the memory map), except that
    float8 weights are dequantized (to the dtype of the file's other float
    tensors, else float32) and a float16 model keeps ``wo`` in float32 (the
    module docstring); ``device=None`` keeps the tensors on the CPU.
    ``encoder_only=True`` returns ``{"shared", "encoder"}`` and reads nothing
    else; encoder-only checkpoints give that tree anyway. ``config`` (an
    ``MT5Config``, a preset name or a ``config.json`` path) replaces the
    checkpoint's config; a single file without one gets a config inferred from
    its shapes, with a warning naming what was assumed. ``quantize="int8"``
    returns ``mt5fn.quantize``'s tree. The returned config's
    ``tie_word_embeddings`` says what the weights say (``lm_head`` absent or
    equal to ``shared`` means tied), whatever ``config.json`` claims.
    """
    path = _check_path(path_or_single_file)
    dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else None
    check_bool("encoder_only", encoder_only)
    if quantize is not None and not isinstance(quantize, str):
        raise ValueError(f"quantize must be None or a scheme name like 'int8', got {quantize!r}")
    given = _given_config(config) if config is not None else None
    gguf_file = _gguf_file(path)
    if gguf_file is not None:  # llama.cpp's format: its own names, metadata and tensor types
        from ._gguf_load import load_gguf

        # quantize= re-quantizes float weights: Q8_0 leaves are dequantized (exactly, to float32) for it
        load_dtype = dtype or (torch.float32 if quantize is not None else None)
        cfg, params = load_gguf(gguf_file, load_dtype, device, encoder_only, given)
        if quantize is not None:
            quantizer = _quantizer(quantize, cfg)
            params = unflatten_params({p: quantizer(p, t) for p, t in flatten_params(params).items()})
        return cfg, params
    if os.path.isdir(path):
        cfg, weights, scale_of, encoder_only, config_file = _open_directory(path, given, encoder_only)
    else:
        weights, scale_of = _file_weights(path)
        _check_has_encoder(weights)
        cfg, config_file = given, "the given config"
        if cfg is None:
            cfg, assumed = infer_config(weights.shapes(), path)
            warnings.warn(f"{path}: no config given; inferred from the tensor shapes: model_type={cfg.model_type!r}, "
                          f"vocab_size={cfg.vocab_size}, d_model={cfg.d_model}, d_kv={cfg.d_kv}, d_ff={cfg.d_ff}, "
                          f"num_layers={cfg.num_layers}, num_heads={cfg.num_heads}, "
                          f"relative_attention_num_buckets={cfg.relative_attention_num_buckets}. Assumed (the weights "
                          f"do not show them): {assumed}. Pass config= (an MT5Config, a preset name or a config.json) "
                          "to override.", UserWarning, stacklevel=2)
            config_file = "the config inferred from its shapes"
    names = list(weights.info)
    encoder_only = encoder_only or not has_decoder_names(names)
    for name, info in weights.info.items():
        if not (isinstance(info.dtype, torch.dtype) and info.dtype.is_floating_point):
            raise ValueError(f"{info.file}: tensor {name!r} has dtype {info.dtype}; weights must be floating")
    try:
        plan = match_names(weights.shapes(), cfg, encoder_only=encoder_only, where=weights.where)
    except ValueError as error:
        lines = str(error).splitlines()
        raise ValueError("\n".join([f"weights in {weights.description} do not match {config_file}:", *lines[1:]])) \
            from None
    # int8: each projection is quantized as it is read, so no float copy of the whole model is held
    quantizer = _quantizer(quantize, cfg) if quantize is not None else None
    params = _read(weights, scale_of, plan, dtype, device, quantizer)
    if quantizer is not None and "lm_head" not in params and not encoder_only:
        params["lm_head"] = quantizer("lm_head", params["shared"])  # a tied head, read as a projection
        tied = True
    else:
        tied = "lm_head" not in params
    params = unflatten_params(params)
    cfg = cfg.replace(tie_word_embeddings=tied) if not encoder_only else cfg
    return cfg, params


def _gguf_file(path: str) -> str | None:
    """``path`` when it is a GGUF file; the one ``.gguf`` of a folder without ``config.json``; else None."""
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return path if handle.read(4) == b"GGUF" or path.endswith(".gguf") else None
    if os.path.isfile(os.path.join(path, CONFIG_NAME)):
        return None
    found = sorted(name for name in os.listdir(path) if name.endswith(".gguf"))
    if len(found) > 1:
        raise ValueError(f"{path}: holds several GGUF files {found}; pass the one to load")
    return checked_path(path, found[0]) if found else None


def _read(weights: Weights, scale_of: dict[str, str], plan: dict[str, str], dtype: torch.dtype | None,
          device: torch.device | None, quantizer: Callable[[str, Tensor], Any] | None = None) -> dict[str, Any]:
    """The planned tensors, one at a time: dequantized, converted and moved (only what ``plan`` names);
    ``quantizer(path, tensor)`` then replaces each (the int8 forms; the head after the tie check)."""
    fp8_default = _float_default(weights)
    embed = weights.info[plan["shared"]].dtype
    model_dtype = dtype or (fp8_default if embed in _fp8.FLOAT8 else embed)
    flat: dict[str, Tensor] = {}
    for path, name in plan.items():
        stored = weights.info[name].dtype
        want = dtype or (fp8_default if stored in _fp8.FLOAT8 else stored)
        if model_dtype == torch.float16 and is_wo(path):
            want = torch.float32
        convert = want != stored or (device is not None and device.type != "cpu")
        tensor = weights.read(name) if convert else weights.load(name)
        if name in scale_of or stored in _fp8.FLOAT8:
            scale = weights.load(scale_of[name]) if name in scale_of else None
            tensor = _fp8.dequantize(tensor, scale, want)
        if tensor.dtype != want or (device is not None and tensor.device != device):
            tensor = tensor.to(device=device, dtype=want)
        flat[path] = tensor if quantizer is None or path == "lm_head" else quantizer(path, tensor)
    if "lm_head" in flat and _same_tensor(flat["lm_head"], flat["shared"]):
        del flat["lm_head"]
    if quantizer is not None and "lm_head" in flat:
        flat["lm_head"] = quantizer("lm_head", flat["lm_head"])
    return flat


def _quantizer(scheme: str, cfg: MT5Config) -> Callable[[str, Tensor], Any]:
    """``(path, tensor) -> leaf``: the int8 form for projections, the tensor itself for the rest."""
    try:
        from ..quant import SCHEMES, is_projection_path, quantize_weight
    except ImportError as error:
        raise ValueError(f"quantize={scheme!r}: weight quantization (mt5fn.quant) is not available "
                         f"({error})") from None
    if scheme not in SCHEMES:
        raise ValueError(f"quantize must be one of {SCHEMES}, got {scheme!r}")
    return lambda path, tensor: quantize_weight(tensor) if is_projection_path(path) else tensor


# --------------------------------------------------------------------------- save
def _cast(flat: dict[str, Tensor], dtype: torch.dtype | None) -> dict[str, Tensor]:
    if dtype is None or dtype in _fp8.FLOAT8:
        return flat
    keep = dtype == torch.float16
    return {path: t.to(torch.float32 if keep and is_wo(path) else dtype) for path, t in flat.items()}


def _model_dtype(flat: dict[str, Tensor]) -> torch.dtype:
    """The one dtype of the tree; float16 with float32 ``wo`` (transformers' rule) counts as float16."""
    main = {t.dtype for path, t in flat.items() if not is_wo(path)}
    wo = {t.dtype for path, t in flat.items() if is_wo(path)}
    if len(main) == 1 and (wo <= main or (main == {torch.float16} and wo <= {torch.float16, torch.float32})):
        return main.pop()
    raise ValueError(f"params: mixed dtypes {sorted(map(str, main | wo))}; convert to one dtype before saving "
                     "(float16 with float32 'wo' is the one mix allowed)")


def _weights_to_write(params: dict, cfg: MT5Config, dtype: torch.dtype | None = None
                      ) -> tuple[dict[str, Tensor], torch.dtype]:
    """(transformers names -> tensors, each stored once: no aliases, no tied head; the model dtype)."""
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be the parameter pytree (a dict), got {type(params).__name__}")
    flat = flatten_params(params)
    for name, tensor in flat.items():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise ValueError(f"params[{name!r}] must be a floating tensor, got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    encoder_only = "decoder" not in params
    state = to_hf_state_dict(params, cfg)
    plan = match_names({n: tuple(t.shape) for n, t in state.items()}, cfg, encoder_only=encoder_only)
    expected = set(plan)
    if "lm_head" in flat:
        expected.add("lm_head")
    extra = sorted(set(flat) - expected)
    if extra:
        raise ValueError(f"params: entries the {cfg.model_type} config has no place for: {extra}")
    flat = _cast(flat, dtype)
    model_dtype = _model_dtype(flat)
    names = {path: name for path, name in plan.items() if path != "lm_head"}
    out = {name: flat[path] for path, name in names.items()}
    if "lm_head" in flat:
        out["lm_head.weight"] = flat["lm_head"]
    return st.unshare(out), model_dtype


def _float8_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Projections as ``float8_e4m3fn`` + ``scale_weight``; everything else as it is (see ``_fp8``)."""
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        projection = re.search(r"\.(q|k|v|o|wi|wi_0|wi_1|wo)\.weight$", name)
        if projection:
            weight, scale = _fp8.quantize_e4m3(tensor)
            out[name] = weight
            out[name[: -len(".weight")] + ".scale_weight"] = scale
        else:
            out[name] = tensor
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)  # ComfyUI's marker of this format
    return out


def hf_config_dict(cfg: MT5Config, tied: bool, dtype: torch.dtype, encoder_only: bool = False) -> dict[str, Any]:
    """``config.json`` contents: ``cfg.to_hf()`` with tying taken from the weights and the dtype."""
    config = cfg.to_hf()
    config["tie_word_embeddings"] = tied
    if cfg.model_type != "mt5":
        config["scale_decoder_outputs"] = cfg.scale_decoder_outputs
    config["dtype"] = str(dtype).removeprefix("torch.")
    if encoder_only:
        config.update(architectures=[ENCODER_CLASSES[cfg.model_type]], use_cache=False,
                      is_encoder_decoder=cfg.model_type == "umt5")  # as transformers writes them
    return dict(sorted(config.items()))


def _write_json(file: str, value: dict) -> None:
    with open(file, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def save_checkpoint(params: dict, cfg: MT5Config, path: str | os.PathLike, max_shard_size: int | str = "5GB",
                    tokenizer: Any = None, copy_files: dict[str, str] | None = None, *,
                    dtype: torch.dtype | str | None = None) -> None:
    """``save_pretrained`` plus ``copy_files`` (name in the checkpoint -> source file), for ``convert``."""
    max_bytes = st.parse_size(max_shard_size)
    dtype = resolve_dtype(dtype, table=_SAVE_DTYPES)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path, got {type(path).__name__}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"path: {os.fspath(path)!r} exists and is a file, not a directory")
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise TypeError(f"tokenizer must be an mt5fn.Tokenizer (or have save_pretrained), "
                        f"got {type(tokenizer).__name__}")
    for name, src in (copy_files or {}).items():
        if os.path.basename(name) != name or not os.path.isfile(src):
            raise ValueError(f"copy_files: {name!r} -> {src!r} is not a plain file name and an existing file")
    tensors, model_dtype = _weights_to_write(params, cfg, dtype)
    encoder_only = "decoder" not in params
    tied = "lm_head.weight" not in tensors
    if dtype in _fp8.FLOAT8:
        tensors = _float8_state(tensors)
    config = hf_config_dict(cfg, tied, model_dtype, encoder_only)
    eos = list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else cfg.eos_token_id  # transformers' list form
    generation = {"decoder_start_token_id": cfg.decoder_start_token_id, "eos_token_id": eos,
                  "pad_token_id": cfg.pad_token_id}
    replaced = {CONFIG_NAME, GENERATION_CONFIG_NAME, *(copy_files or {})}
    if tokenizer is not None or any(name in TOKENIZER_FILES for name in copy_files or {}):
        replaced.update(TOKENIZER_FILES)  # a stale tokenizer.json would shadow the new spiece.model

    def keep(name: str) -> bool:
        return name not in replaced and not _WEIGHT_FILE.match(name)

    with atomic_directory(path, keep=keep) as tmp:
        _write_json(os.path.join(tmp, CONFIG_NAME), config)
        if not encoder_only:
            _write_json(os.path.join(tmp, GENERATION_CONFIG_NAME), generation)
        st.write_safetensors(tensors, tmp, max_bytes)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, src in (copy_files or {}).items():
            with open(src, "rb") as reader, open(os.path.join(tmp, name), "wb") as writer:
                writer.write(reader.read())


def save_pretrained(params: dict, cfg: MT5Config, path: str | os.PathLike, max_shard_size: int | str = "5GB",
                    *, tokenizer: Any = None, dtype: torch.dtype | str | None = None) -> None:
    """Write a checkpoint directory that transformers and :func:`load_pretrained` both read.

    ``config.json`` + ``generation_config.json`` + safetensors (sharded with
    ``model.safetensors.index.json`` when larger than ``max_shard_size``:
    bytes, ``"500MB"``, ``"5GB"`` or ``"2GiB"``). An encoder-only tree writes
    the folder of transformers' ``T5EncoderModel`` / ``MT5EncoderModel`` /
    ``UMT5EncoderModel``. ``dtype`` converts on the way (float16 keeps ``wo``
    in float32, as transformers does); ``torch.float8_e4m3fn`` writes scaled
    float8 projections that mt5fn and ComfyUI read but transformers does not
    (see ``_fp8`` for the loss). With ``tokenizer`` its files are written too
    (``tokenizer.json`` and ``tokenizer_config.json``, plus ``spiece.model``
    when it has one). Files already in ``path`` that are not weights, configs
    or (when a tokenizer is given) tokenizer files are kept. Crash-safe: on any
    error or kill the previous contents of ``path`` are whole; a link at
    ``path`` is written through.
    """
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".gguf"):
        save_gguf_file(params, cfg, os.fspath(path), dtype, tokenizer)
        return
    save_checkpoint(params, cfg, path, max_shard_size, tokenizer=tokenizer, dtype=dtype)


def save_gguf_file(params: dict, cfg: MT5Config, path: str, dtype: Any, tokenizer: Any = None) -> None:
    """A ``.gguf`` file as llama.cpp's converter writes it; ``dtype``: a float dtype or ``"q8_0"``
    (None: the tree's own float32 / float16 / bfloat16)."""
    from ._gguf_write import dense_tree, save_gguf

    params = dense_tree(params)  # Q8_0 leaves (a GGUF read as it is) back to float32, exactly
    if isinstance(dtype, str) and dtype.lower() == "q8_0":
        outtype = "q8_0"
    else:
        resolved = resolve_dtype(dtype) or _model_dtype(flatten_params(params))
        outtype = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}.get(resolved, str(resolved))
    save_gguf(params, cfg, path, outtype, tokenizer)


__all__ = ["load_pretrained", "save_pretrained", "save_checkpoint", "resolve_dtype", "read_config", "hf_config_dict"]
