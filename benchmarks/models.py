"""The two implementations under test, loaded from one saved checkpoint.

A random mt5-shaped model (untied head) is written once with transformers'
``save_pretrained`` into a temporary directory; transformers loads it with
``from_pretrained`` (its default attention implementation, SDPA in 5.x) and
mt5fn with ``mt5fn.load_pretrained``. Both therefore hold the same weights,
in the same dtype, on the same device, and a short parity check proves it
before anything is timed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

import mt5fn

INSTALL_HINT = 'pip install -e ".[bench]"'

# A tiny shape for smoke-testing the harness itself (seconds, not minutes).
TINY = dict(model_type="mt5", vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
            num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


class MissingDependency(RuntimeError):
    """transformers is not installed; the message says how to install it."""


def require_transformers():
    try:
        import transformers
    except ImportError as error:
        raise MissingDependency(f"the benchmark compares against transformers, which is not installed "
                                f"({error}); install it with: {INSTALL_HINT}") from None
    return transformers


def model_config(name: str) -> mt5fn.MT5Config:
    """``tiny`` or any ``MT5Config.preset`` name; the head is untied as in mT5."""
    if name == "tiny":
        return mt5fn.MT5Config(**TINY)
    return mt5fn.MT5Config.preset(name)


@dataclass
class Loaded:
    cfg: mt5fn.MT5Config
    params: dict
    hf: torch.nn.Module
    parity: float  # max |logits difference| on a short input
    scale: float  # max |logit| there, to read the difference against


def _hf_class(transformers, cfg: mt5fn.MT5Config):
    names = {"t5": "T5ForConditionalGeneration", "mt5": "MT5ForConditionalGeneration",
             "umt5": "UMT5ForConditionalGeneration"}
    return getattr(transformers, names[cfg.model_type])


def _write_checkpoint(cfg: mt5fn.MT5Config, directory: str, transformers) -> None:
    hf_class = _hf_class(transformers, cfg)
    config_class = transformers.CONFIG_MAPPING[cfg.model_type]
    values = {k: v for k, v in cfg.to_hf().items() if k not in ("model_type", "architectures")}
    params = mt5fn.init_params(cfg, seed=0)
    with torch.device("meta"):
        model = hf_class(config_class(**values))
    state = mt5fn.to_hf_state_dict(params, cfg)
    model.load_state_dict(state, strict=False, assign=True)
    if "lm_head" in params:
        model.lm_head.weight = torch.nn.Parameter(params["lm_head"])
    model.save_pretrained(directory)


def load_both(model_name: str, device: torch.device, dtype: torch.dtype) -> Loaded:
    """Save one checkpoint, load it into both implementations, check they agree."""
    transformers = require_transformers()
    cfg = model_config(model_name)
    with tempfile.TemporaryDirectory(prefix="mt5fn-bench-") as directory:
        _write_checkpoint(cfg, directory, transformers)
        hf = _hf_class(transformers, cfg).from_pretrained(directory, dtype=dtype).to(device).eval()
        cfg, params = mt5fn.load_pretrained(directory, dtype=dtype, device=device)
        # clone: own memory instead of the checkpoint's memory map, which is about to be deleted
        params = mt5fn.tree_map(lambda t: t.clone(), params)
    if "lm_head" in params and hf.lm_head.weight is hf.get_input_embeddings().weight:
        raise RuntimeError("transformers tied the head of an untied checkpoint; the comparison would be unfair")
    hf.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size, (2, 16), generator=generator).to(device)
    dec = torch.randint(2, cfg.vocab_size, (2, 8), generator=generator).to(device)
    with torch.no_grad():
        ours = mt5fn.forward(params, cfg, ids, dec)
        theirs = hf(input_ids=ids, decoder_input_ids=dec).logits
    parity = (ours.float() - theirs.float()).abs().max().item()
    return Loaded(cfg, params, hf, parity, theirs.float().abs().max().item())
