"""Hugging Face checkpoint directories: ``load_pretrained`` and ``save_pretrained``.

A checkpoint is a directory with ``config.json`` and weights in one of the
layouts transformers writes, tried in this order:

* ``model.safetensors``
* ``model.safetensors.index.json`` + ``model-0000i-of-0000n.safetensors`` shards
* ``pytorch_model.bin``
* ``pytorch_model.bin.index.json`` + ``pytorch_model-0000i-of-0000n.bin`` shards

safetensors is memory-mapped (no copy until a dtype or device change asks for
one). ``.bin`` pickles are read only with ``torch.load(weights_only=True)``:
a pickle that would build anything but tensors is refused, never executed.

Saving writes ``config.json``, ``generation_config.json`` and safetensors
(each tensor once: the embedding aliases and a tied head are dropped, as
transformers 5 does), sharded above ``max_shard_size``. The write is atomic
(see :mod:`mt5fn._atomic`): a failed save leaves the previous checkpoint at
``path`` byte-identical.

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

import json
import os
import pickle
import re
from typing import Any

import torch
from torch import Tensor

from . import _safetensors_io as st
from ._atomic import atomic_directory
from ..model._config import MT5Config, read_config_json
from ._hf_names import from_hf_state_dict, to_hf_state_dict
from ..model._params import flatten_params, tree_map

CONFIG_NAME = "config.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"
_FLOAT_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "double": torch.float64,
}
# Files a save rewrites; anything else in an existing target directory is kept.
_WEIGHT_FILE = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def resolve_dtype(dtype: Any, name: str = "dtype") -> torch.dtype | None:
    """``None`` or a floating dtype (``torch.bfloat16`` or ``"bfloat16"``); anything else is a ValueError."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.").lower()
        if key in _FLOAT_DTYPES:
            return _FLOAT_DTYPES[key]
    elif isinstance(dtype, torch.dtype) and dtype in _FLOAT_DTYPES.values():
        return dtype
    raise ValueError(f"{name} must be a floating dtype that weights can be held in "
                     f"(float32, bfloat16, float16, float64), got {dtype!r}")


# --------------------------------------------------------------------------- load
def _check_dir(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path to a checkpoint directory, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such directory {path!r}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{name}: {path!r} is a file; expected a checkpoint directory "
                                 f"holding {CONFIG_NAME} and weights")
    return path


def read_config(path: str) -> MT5Config:
    """``MT5Config`` from ``path/config.json``; errors name the file."""
    file = os.path.join(path, CONFIG_NAME)
    config = read_config_json(file)
    try:
        return MT5Config.from_hf(config)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{file}: {error}") from None


def _load_bin(file: str) -> dict[str, Tensor]:
    """A ``.bin`` state dict through the weights-only unpickler (memory-mapped when the format allows)."""
    def load(mmap: bool) -> Any:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            state = load(mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error) and "zip" not in str(error):
                raise
            state = load(mmap=False)  # the pre-1.6 (non-zip) format cannot be memory-mapped
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{file}: refused to load: the pickle holds something other than tensors, "
                         f"and only weights-only pickles are read (no code from a checkpoint runs). "
                         f"{first}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{file}: not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{file}: expected a dict of tensor names to tensors, got {type(state).__name__}")
    return state


def weights_layout(path: str) -> tuple[str, str, bool]:
    """``(format, file, sharded)`` of the weights in ``path``: the single file or the shard index
    transformers would read, safetensors before ``.bin``."""
    for kind, single, index in (("safetensors", st.WEIGHTS_NAME, st.INDEX_NAME), ("bin", BIN_NAME, BIN_INDEX_NAME)):
        if os.path.isfile(os.path.join(path, single)):
            return kind, os.path.join(path, single), False
        if os.path.isfile(os.path.join(path, index)):
            return kind, os.path.join(path, index), True
    raise FileNotFoundError(f"{path}: no weights found; expected one of {st.WEIGHTS_NAME}, {st.INDEX_NAME}, "
                            f"{BIN_NAME} or {BIN_INDEX_NAME}")


def _read_weights(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, tensor name -> file it came from)."""
    kind, file, sharded = weights_layout(path)
    reader = st.read_safetensors if kind == "safetensors" else _load_bin
    if not sharded:
        state = reader(file)
        return state, dict.fromkeys(state, file)
    weight_map = st.read_index(file)
    state, source = {}, {}
    for shard in sorted(set(weight_map.values())):
        part = reader(os.path.join(path, shard))
        state.update(part)
        source.update(dict.fromkeys(part, os.path.join(path, shard)))
    absent = [name for name, shard in weight_map.items() if source.get(name) != os.path.join(path, shard)]
    if absent:
        raise ValueError(f"{file}: names tensors its shards do not hold: "
                         f"{', '.join(sorted(absent)[:5])}{' ...' if len(absent) > 5 else ''}")
    return state, source


def _annotate(error: ValueError, source: dict[str, str], config_file: str) -> ValueError:
    """Name the file of each offending tensor in ``from_hf_state_dict``'s report."""
    lines = str(error).splitlines()
    out = [f"weights do not match {config_file}:"]
    for line in lines[1:]:
        match = re.match(r"\s+(?:unexpected|wrong shape): ([^:\s]+)", line)
        out.append(f"{line}  [in {source[match.group(1)]}]" if match and match.group(1) in source else line)
    return ValueError("\n".join(out))


def load_pretrained(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None) -> tuple[MT5Config, dict]:
    """``(cfg, params)`` from a Hugging Face checkpoint directory.

    ``dtype=None`` keeps the stored dtype (and the memory map); ``device=None``
    keeps the tensors on the CPU. The returned config's
    ``tie_word_embeddings`` says what the weights say (``lm_head`` absent or
    equal to ``shared`` means tied), whatever ``config.json`` claims.
    """
    path = _check_dir(path)
    dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else None
    cfg = read_config(path)
    state, source = _read_weights(path)
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{source[name]}: tensor {name!r} has dtype {tensor.dtype}; weights must be floating")
    try:
        params = from_hf_state_dict(state, cfg)
    except ValueError as error:
        raise _annotate(error, source, os.path.join(path, CONFIG_NAME)) from None
    del state
    if dtype is not None or device is not None:
        params = tree_map(lambda t: t.to(device=device, dtype=dtype), params)
    return cfg.replace(tie_word_embeddings="lm_head" not in params), params


# --------------------------------------------------------------------------- save
def _weights_to_write(params: dict, cfg: MT5Config) -> dict[str, Tensor]:
    """transformers names -> tensors, each stored once (no aliases, no tied head)."""
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be the parameter pytree (a dict), got {type(params).__name__}")
    flat = flatten_params(params)
    for name, tensor in flat.items():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise ValueError(f"params[{name!r}] must be a floating tensor, got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    state = to_hf_state_dict(params, cfg)
    expected = set(flatten_params(from_hf_state_dict(state, cfg)))  # also checks every shape
    if "lm_head" in flat:
        expected.add("lm_head")
    extra = sorted(set(flat) - expected)
    if extra:
        raise ValueError(f"params: entries the {cfg.model_type} config has no place for: {extra}")
    out = {name: tensor for name, tensor in state.items()
           if name not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")}
    if "lm_head" in flat:
        out["lm_head.weight"] = flat["lm_head"]
    return st.unshare(out)


def hf_config_dict(cfg: MT5Config, tied: bool, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` contents: ``cfg.to_hf()`` with tying taken from the weights and the dtype."""
    config = cfg.to_hf()
    config["tie_word_embeddings"] = tied
    if cfg.model_type != "mt5":
        config["scale_decoder_outputs"] = cfg.scale_decoder_outputs
    config["dtype"] = str(dtype).removeprefix("torch.")
    return dict(sorted(config.items()))


def _write_json(file: str, value: dict) -> None:
    with open(file, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def save_checkpoint(params: dict, cfg: MT5Config, path: str | os.PathLike, max_shard_size: int | str = "5GB",
                    tokenizer: Any = None, copy_files: dict[str, str] | None = None) -> None:
    """``save_pretrained`` plus ``copy_files`` (name in the checkpoint -> source file), for ``convert``."""
    max_bytes = st.parse_size(max_shard_size)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path, got {type(path).__name__}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"path: {os.fspath(path)!r} exists and is a file, not a directory")
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise TypeError(f"tokenizer must be an mt5fn.Tokenizer (or have save_pretrained), "
                        f"got {type(tokenizer).__name__}")
    tensors = _weights_to_write(params, cfg)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise ValueError(f"params: mixed dtypes {sorted(map(str, dtypes))}; convert to one dtype before saving")
    config = hf_config_dict(cfg, "lm_head.weight" not in tensors, dtypes.pop())
    generation = {"decoder_start_token_id": cfg.decoder_start_token_id, "eos_token_id": cfg.eos_token_id,
                  "pad_token_id": cfg.pad_token_id}
    from ..tokenizer._sentencepiece import TOKENIZER_FILES

    replaced = {CONFIG_NAME, "generation_config.json", *(copy_files or {})}
    if tokenizer is not None or any(name in TOKENIZER_FILES for name in copy_files or {}):
        replaced.update(TOKENIZER_FILES)  # a stale tokenizer.json would shadow the new spiece.model

    def keep(name: str) -> bool:
        return name not in replaced and not _WEIGHT_FILE.match(name)

    with atomic_directory(path, keep=keep) as tmp:
        _write_json(os.path.join(tmp, CONFIG_NAME), config)
        _write_json(os.path.join(tmp, "generation_config.json"), generation)
        st.write_safetensors(tensors, tmp, max_bytes)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, src in (copy_files or {}).items():
            with open(src, "rb") as reader, open(os.path.join(tmp, name), "wb") as writer:
                writer.write(reader.read())


def save_pretrained(params: dict, cfg: MT5Config, path: str | os.PathLike, max_shard_size: int | str = "5GB",
                    *, tokenizer: Any = None) -> None:
    """Write a checkpoint directory that transformers and :func:`load_pretrained` both read.

    ``config.json`` + ``generation_config.json`` + safetensors (sharded with
    ``model.safetensors.index.json`` when larger than ``max_shard_size``:
    bytes, ``"500MB"``, ``"5GB"`` or ``"2GiB"``). With ``tokenizer`` its files
    (``spiece.model``, ``tokenizer_config.json``, ``special_tokens_map.json``)
    are written too. Files already in ``path`` that are not weights, configs
    or (when a tokenizer is given) tokenizer files are kept. Atomic: on any
    error the previous contents of ``path`` are untouched.
    """
    save_checkpoint(params, cfg, path, max_shard_size, tokenizer=tokenizer)
