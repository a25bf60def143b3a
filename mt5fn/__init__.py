"""mt5fn: the T5 / mT5 / UMT5 encoder-decoder as pure PyTorch functions.

Everything takes the parameter pytree first and the frozen config second::

    cfg = mt5fn.MT5Config.preset("mt5-small")
    params = mt5fn.init_params(cfg, seed=0)
    logits = mt5fn.forward(params, cfg, input_ids, decoder_input_ids)

Block-level functions live in :mod:`mt5fn.functional`.
"""

from . import data, functional, training
from ._checkpoint import load_pretrained, save_pretrained
from ._cache import DecodeCache, decode_step, init_cache
from ._config import MT5Config
from ._generate import generate
from ._hf_names import from_hf_state_dict, to_hf_state_dict
from ._model import decode, encode, forward, lm_logits, loss, shift_right
from ._module import MT5Module, module_params
from ._params import flatten_params, init_params, num_params, tree_map, unflatten_params
from ._tokenizer import Tokenizer, train_tokenizer

__version__ = "0.1.0"

__all__ = [
    "MT5Config", "MT5Module", "decode", "encode", "flatten_params", "forward", "from_hf_state_dict",
    "data", "functional", "training", "init_params", "lm_logits", "loss", "module_params", "num_params", "shift_right",
    "DecodeCache", "decode_step", "generate", "init_cache",
    "to_hf_state_dict", "tree_map", "unflatten_params",
    "load_pretrained", "save_pretrained", "Tokenizer", "train_tokenizer",
]
