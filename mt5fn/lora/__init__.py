"""The LoRA room: low-rank adapters as pytrees (Hu et al. 2021) and PEFT's adapter folder format.

::

    ad = mt5fn.lora.init(params, cfg, rank=8, alpha=16, targets=("q", "v"))
    logits = mt5fn.forward(mt5fn.lora.apply(params, ad, cfg), cfg, input_ids, decoder_input_ids)
    grads = torch.func.grad(lambda ad: mt5fn.loss(mt5fn.lora.apply(params, ad, cfg), cfg, x, y))(ad)
    mt5fn.lora.save_adapter(ad, cfg, "adapter")           # peft.PeftModel.from_pretrained reads it
    ad = mt5fn.lora.load_adapter("adapter", params, cfg)  # and mt5fn reads PEFT's
    merged = mt5fn.lora.merge(params, ad, cfg)

``is_trainable(path)`` separates the ``A`` / ``B`` factors (trained) from the
``alpha`` / ``dropout`` settings (0-d leaves, never trained) by dotted path.
"""

from ._adapters import FACTORS, SETTINGS, adapter_sites, apply, init, is_trainable, merge, rank_of
from ._peft import CONFIG_FILE, WEIGHTS_FILE, load_adapter, read_config, save_adapter
from ._sites import TARGET_NAMES, Site, expand_targets, sites

__all__ = ["CONFIG_FILE", "FACTORS", "SETTINGS", "Site", "TARGET_NAMES", "WEIGHTS_FILE", "adapter_sites", "apply",
           "expand_targets", "init", "is_trainable", "load_adapter", "merge", "rank_of", "read_config",
           "save_adapter", "sites"]
