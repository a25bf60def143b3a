"""Helpers that build the transformers reference model for a given mt5fn model.

The reference is transformers' ``{T5,MT5,UMT5}ForConditionalGeneration`` in
float32 with eager attention, holding the same tensors as the mt5fn pytree.
"""

from __future__ import annotations

import torch

import mt5fn

_CLASSES = {"t5": "T5ForConditionalGeneration", "mt5": "MT5ForConditionalGeneration",
            "umt5": "UMT5ForConditionalGeneration"}


def hf_config(cfg: mt5fn.MT5Config):
    import transformers

    config_class = transformers.CONFIG_MAPPING[cfg.model_type]
    values = cfg.to_hf()
    values.pop("model_type")
    values.pop("architectures")
    return config_class(**values)


def hf_model(cfg: mt5fn.MT5Config, params: dict):
    """A transformers model in eval mode and eager attention with ``params``' weights.

    transformers ties ``lm_head`` to ``shared`` at construction whatever the
    config says; an untied pytree gets its own head parameter here.
    """
    import transformers

    model_class = getattr(transformers, _CLASSES[cfg.model_type])
    model = model_class(hf_config(cfg))
    if "lm_head" in params:
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(params["lm_head"]))
    state = {key: value.detach().clone() for key, value in mt5fn.to_hf_state_dict(params, cfg).items()}
    model.load_state_dict(state, strict=True)
    model.set_attn_implementation("eager")
    return model.eval()
