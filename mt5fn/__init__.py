"""mt5fn: the T5 / mT5 / UMT5 encoder-decoder as pure PyTorch functions.

Everything takes the parameter pytree first and the frozen config second::

    cfg = mt5fn.MT5Config.preset("mt5-small")
    params = mt5fn.init_params(cfg, seed=0)
    logits = mt5fn.forward(params, cfg, input_ids, decoder_input_ids)

Start reading at ``mt5fn/reference.py``: the whole T5 family in one file,
the oracle every fast path here is proven equal to (``spec/``). The package
is a set of rooms, each a folder with one concern per file, lowest first
(``docs/design.md`` has the map): ``kernels`` (the one ``linear`` over every
weight-leaf form, kernel choice), ``checks`` (the boundary checks and
pre-flight every room shares), ``functional`` (block math on one weight
form), ``model`` (config, pytree, stacks, model functions, module facade),
``quant``, ``checkpoint``, ``tokenizer``, ``lora``, ``data``, ``decoding``
(cache, decoding layouts, generate), ``training``, ``demo`` and ``cli``. The
names below are the public API.
"""

from . import data, functional, lora, reference, training
from .checkpoint import from_hf_state_dict, load_pretrained, save_pretrained, to_hf_state_dict
from .decoding import (DecodeCache, GenerateOutput, GenerationConfig, decode_step, generate, init_cache,
                       prepare_decoding, stream)
from .model import (MT5Config, MT5Module, Scores, decode, encode, flatten_params, forward, init_params,
                    intermediates, lm_logits, loss, module_params, num_params, score, shift_right, tree_map,
                    unflatten_params)
from .quant import dequantize, quantize
from .tokenizer import Tokenizer, train_tokenizer

__version__ = "0.1.0"

__all__ = ["MT5Config", "MT5Module", "decode", "encode", "flatten_params", "forward", "from_hf_state_dict", "data",
    "functional", "lora", "reference", "training", "init_params", "lm_logits", "loss", "module_params",
    "num_params", "shift_right", "DecodeCache", "GenerationConfig", "decode_step", "generate", "init_cache",
    "prepare_decoding", "GenerateOutput", "stream", "to_hf_state_dict", "tree_map", "unflatten_params",
    "intermediates", "score", "Scores", "load_pretrained", "save_pretrained", "Tokenizer", "train_tokenizer",
    "quantize", "dequantize"]
