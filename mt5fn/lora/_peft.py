"""PEFT's adapter folder: ``save_adapter`` writes one, ``load_adapter`` reads one.

The format (huggingface/peft ``save_pretrained`` of a LoRA model):

* ``adapter_config.json``: ``peft_type: "LORA"``, ``r``, ``lora_alpha``,
  ``lora_dropout``, ``target_modules`` (module names or suffixes, or one
  regular expression), and PEFT's other options;
* ``adapter_model.safetensors``: ``base_model.model.<module>.lora_A.weight``
  (r, in) and ``...lora_B.weight`` (out, r) for every adapted module, named as
  in transformers' T5 / mT5 / UMT5 (``encoder.block.0.layer.0.SelfAttention.q``).
  Older folders hold ``adapter_model.bin`` instead; it is read too.

``load_adapter`` matches ``target_modules`` (and ``exclude_modules``) against
the model's module names the way PEFT does, and requires the weights file to
hold exactly the modules that match, with the config's rank. Options whose
effect mt5fn does not implement -- DoRA, trainable biases, ``modules_to_save``,
per-module ``rank_pattern`` / ``alpha_pattern``, layer selection, other
LoRA variants and initialisations that rewrite the base weights -- are
refused, all together, in one error naming them; nothing is ever half-loaded.
rsLoRA (``use_rslora``, scale ``alpha / sqrt(r)``) loads with ``alpha``
recorded as ``lora_alpha * sqrt(r)``: the same scale ``alpha / r``.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import torch
from torch import Tensor

from .. import checks as check
from ..checks import read_json
from ..model import MT5Config, check_config
from ..checkpoint import atomic_directory, checked_path, load_bin, one_version
from ._adapters import _check_pair, adapter_sites, settings
from ._sites import STACKS, Site, sites

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")

# Options mt5fn does not implement: name -> the values that mean "off" (absent keys are off too).
_OFF: dict[str, tuple[Any, ...]] = {
    "use_dora": (False,),
    "bias": ("none",),
    "lora_bias": (False,),
    "modules_to_save": (None, []),
    "rank_pattern": (None, {}),
    "alpha_pattern": (None, {}),
    "fan_in_fan_out": (False,),
    "layers_to_transform": (None, []),
    "layers_pattern": (None, [], ""),
    "layer_replication": (None, []),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, [], {}),
    "alora_invocation_tokens": (None, []),
    "use_qalora": (False,),
    "use_bdlora": (None, False),
    "arrow_config": (None,),
    "kasa_config": (None,),
    "velora_config": (None,),
    "monteclora_config": (None,),
}
# Initialisations that leave the base weights as they are (the others -- PiSSA, OLoRA, LoftQ, CorDA,
# LoRA-GA -- rewrite them, so the adapter alone does not reproduce the model on the original base).
_PLAIN_INITS = (True, False, "gaussian", "eva")

# Modules of the transformers model LoRA could attach to that mt5fn's adapters do not cover.
_OTHER_MODULES = ("shared", "lm_head", "encoder.embed_tokens", "decoder.embed_tokens")


def _short_float(leaf: Tensor) -> float | int:
    """A 0-d leaf as the shortest decimal that reads back as the same value in its dtype
    (a float32 ``0.1`` is written ``0.1``, not ``0.10000000149011612``)."""
    value = float(leaf)
    if value.is_integer():
        return int(value)
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if torch.tensor(float(text), dtype=leaf.dtype).item() == value:
            return float(text)
    return value


def _target_modules(found: list[tuple[Site, Tensor, Tensor]], cfg: MT5Config) -> list[str]:
    """Short names when the adapted modules are exactly every module with those names, else full names."""
    names = sorted({site.name for site, _, _ in found})
    adapted = {site.hf_name for site, _, _ in found}
    if adapted == {site.hf_name for site in sites(cfg) if site.name in names}:
        return names
    return sorted(adapted)


def save_adapter(adapters: dict, cfg: MT5Config, path: str | os.PathLike) -> None:
    """Write ``adapters`` as a PEFT adapter folder at ``path`` (``adapter_config.json`` +
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads onto transformers'
    model. Atomic: the folder appears complete or not at all; other files already in it are kept."""
    from safetensors.torch import save as safetensors_bytes

    check_config(cfg)
    found = adapter_sites(adapters, cfg)
    rank = int(found[0][1].shape[0])
    tensors: dict[str, Tensor] = {}
    for site, a, b in found:
        tensors[f"{PREFIX}{site.hf_name}.lora_A.weight"] = a.detach().to("cpu").contiguous()
        tensors[f"{PREFIX}{site.hf_name}.lora_B.weight"] = b.detach().to("cpu").contiguous()
    config = {
        "peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "base_model_name_or_path": None, "revision": None,
        "inference_mode": True, "r": rank, "lora_alpha": _short_float(adapters["alpha"]),
        "lora_dropout": _short_float(adapters["dropout"]), "target_modules": _target_modules(found, cfg),
        "exclude_modules": None, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
        "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
        "alpha_pattern": {}, "use_rslora": False, "use_dora": False, "lora_bias": False,
    }
    payload = safetensors_bytes(tensors, metadata={"format": "pt"})
    own = {CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE}
    with atomic_directory(path, keep=lambda name: name not in own) as folder:
        with open(os.path.join(folder, WEIGHTS_FILE), "wb") as handle:
            handle.write(payload)
        with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ loading
def _matches(pattern: Any, key: str) -> bool:
    """PEFT's rule: a string is a regular expression matched against the whole module name; a list
    matches a module named exactly as an entry or ending in ``.<entry>``."""
    if isinstance(pattern, str):
        return re.fullmatch(pattern, key) is not None
    return key in pattern or any(key.endswith(f".{entry}") for entry in pattern)


def _patterns(config: dict, field: str, file: str, required: bool) -> Any:
    value = config.get(field)
    if value is None and not required:
        return None
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"{file}: {field} {value!r} is not a valid regular expression ({error})") from None
        return value
    if isinstance(value, list) and value and all(isinstance(entry, str) for entry in value):
        return value
    raise ValueError(f"{file}: {field} must be a list of module names or a regular expression, got {value!r}")


def read_config(file: str) -> tuple[int, float, float, Any, Any]:
    """``(r, alpha, dropout, target_modules, exclude_modules)`` of a PEFT LoRA config, ``alpha`` as the
    scale ``alpha / r`` needs it; options mt5fn does not implement are refused, all named at once."""
    config = read_json(file, missing="not a PEFT adapter folder")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{file}: peft_type is {config.get('peft_type')!r}; mt5fn loads LoRA adapters "
                         "(peft_type 'LORA') only")
    unsupported = [f"{name}={config[name]!r}" for name, off in _OFF.items()
                   if name in config and not any(config[name] == value and type(config[name]) is type(value)
                                                 for value in off)]
    init_weights = config.get("init_lora_weights", True)
    if not any(init_weights == value and type(init_weights) is type(value) for value in _PLAIN_INITS):
        unsupported.append(f"init_lora_weights={init_weights!r} (it rewrites the base weights; convert the "
                           "adapter with PEFT's path_initial_model_for_weight_conversion first)")
    if unsupported:
        raise ValueError(f"{file}: PEFT options mt5fn does not implement: {', '.join(unsupported)}")
    rank = config.get("r")
    try:
        check.check_int("r", rank, 1)
        alpha = check.check_real("lora_alpha", config.get("lora_alpha", 8))
        dropout = check.check_real("lora_dropout", config.get("lora_dropout", 0.0))
        rslora = check.check_bool("use_rslora", config.get("use_rslora", False))
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from None
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{file}: lora_dropout must lie in [0, 1), got {dropout!r}")
    if rslora:
        alpha = alpha * math.sqrt(rank)  # alpha / sqrt(r) == (alpha sqrt(r)) / r
    targets = _patterns(config, "target_modules", file, required=True)
    excluded = _patterns(config, "exclude_modules", file, required=False)
    return rank, alpha, dropout, targets, excluded


def _read_weights(folder: str) -> tuple[str, dict[str, Tensor]]:
    """The factors of the folder, read whole (no memory map: a later save must not change them), by the
    closed-world rule (``checkpoint/_closed.py``) and, for ``.bin``, the weights-only unpickler."""
    file = checked_path(folder, WEIGHTS_FILE)
    if os.path.isfile(file):
        from safetensors.torch import load

        try:
            with open(file, "rb") as handle:
                return file, load(handle.read())
        except OSError as error:
            raise OSError(f"{file}: cannot be read ({error.strerror or error})") from None
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{file}: not a readable safetensors file ({error})") from None
    legacy = checked_path(folder, LEGACY_WEIGHTS_FILE)
    if os.path.isfile(legacy):
        state = load_bin(legacy)
        return legacy, {name: tensor.clone() for name, tensor in state.items()}  # off the memory map
    raise FileNotFoundError(f"{folder}: has neither {WEIGHTS_FILE} nor {LEGACY_WEIGHTS_FILE}")


def _module_names(cfg: MT5Config) -> list[str]:
    """transformers' modules outside the sites that a pattern could also select."""
    tables = [f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias" for stack in STACKS
              for i in range(cfg.num_layers if stack == "encoder" else cfg.num_decoder_layers)
              if cfg.per_layer_position_bias or i == 0]
    return [*_OTHER_MODULES, *tables]


def load_adapter(path: str | os.PathLike, params: dict, cfg: MT5Config) -> dict:
    """The adapter pytree of the PEFT LoRA folder ``path``, checked against ``params`` and ``cfg``.

    The tensors keep their stored dtype and move to ``params``' device. Any
    mismatch -- a module the model lacks, a module the config selects but the
    file lacks, a rank or shape that does not fit, an unsupported option --
    is a ``ValueError`` naming it.
    """
    check_config(cfg)
    check.check_params(params, cfg)
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: {folder!r} is not a directory (a PEFT adapter folder)")
    # One version of the folder (a concurrent save_adapter swaps it whole), and no file from outside it.
    return one_version(folder, lambda: _load_folder(folder, params, cfg))


def _load_folder(folder: str, params: dict, cfg: MT5Config) -> dict:
    config_file = checked_path(folder, CONFIG_FILE)
    rank, alpha, dropout, targets, excluded = read_config(config_file)

    def selected(name: str) -> bool:
        return _matches(targets, name) and not (excluded is not None and _matches(excluded, name))

    others = [name for name in _module_names(cfg) if selected(name)]
    if others:
        raise ValueError(f"{config_file}: target_modules selects {others}; mt5fn's LoRA adapts the attention "
                         "and feed-forward projections only")
    stacks = tuple(stack for stack in STACKS if stack in params)
    wanted = {site.hf_name: site for site in sites(cfg, stacks) if selected(site.hf_name)}
    if not wanted:
        raise ValueError(f"{config_file}: target_modules {targets!r} selects no module of this "
                         f"{cfg.model_type} model")
    file, state = _read_weights(folder)
    factors: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        match = _KEY.match(key)
        if match is None or match["module"] not in wanted:
            unknown.append(key)
            continue
        factors.setdefault(match["module"], {})[match["factor"]] = tensor
    if "decoder" not in stacks and any(key.startswith(f"{PREFIX}decoder.") for key in unknown):
        raise ValueError(f"{file}: the adapter adapts the decoder but params have no decoder (an encoder-only "
                         "tree)")
    if unknown:
        unknown.sort()  # a stable message, whatever order the file lists its tensors in
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise ValueError(f"{file}: holds tensors that are not LoRA factors of the modules target_modules selects "
                         f"in this {cfg.model_type} model: {shown}")
    missing = [name for name in wanted if set(factors.get(name, {})) != {"A", "B"}]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ValueError(f"{file}: target_modules selects modules whose lora_A / lora_B weights are missing: "
                         f"{shown}")

    device = params["shared"].device
    tree: dict[str, Any] = {stack: {"blocks": [{} for _ in range(cfg.num_layers if stack == "encoder"
                                                                   else cfg.num_decoder_layers)]}
                            for stack in sorted({site.path[0] for site in wanted.values()}, key=STACKS.index)}
    for site in sites(cfg):  # pytree order
        if site.hf_name not in wanted:
            continue
        stack, block, sub, name = site.path
        pair = {factor: factors[site.hf_name][factor].to(device) for factor in ("A", "B")}
        tree[stack]["blocks"][block].setdefault(sub, {})[name] = pair
    tree.update(settings(alpha, dropout, params))
    try:
        found = _check_pair(params, tree, cfg)
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from None
    stored = int(found[0][1].shape[0])
    if stored != rank:
        raise ValueError(f"{file}: the factors have rank {stored} but {CONFIG_FILE} says r = {rank}")
    return tree
