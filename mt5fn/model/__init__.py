"""The model room: config and presets, the parameter pytree and its tree helpers, the two stacks,
``encode`` / ``decode`` / ``forward`` / ``loss``, ``intermediates``, ``score`` and the ``nn.Module`` facade.

Read ``_stacks`` (the one loop over blocks) and then ``_model`` (the public
functions: validate once, then run the stacks).
"""

from ..checks import check_device, check_seed, read_json
from ._config import MT5Config, check_config, read_config_json
from ._intermediates import intermediates
from ._model import (check_pair, decode, embed_pair, encode, forward, head_input, lm_logits, loss, run_encoder,
                     run_seq2seq, shift_right)
from ._module import MT5Module, module_params
from ._params import flatten_params, init_params, iter_leaves, num_params, tree_map, unflatten_params
from ._score import Scores, score
from ._stacks import Block, BiasOf, checkpointed, decoder_stack, embed, encoder_stack, run_stack

__all__ = ["BiasOf", "Block", "MT5Config", "MT5Module", "Scores", "check_config", "check_device", "check_pair",
           "check_seed", "checkpointed", "decode", "decoder_stack", "embed", "embed_pair", "encode", "encoder_stack",
           "flatten_params", "forward", "head_input", "init_params", "intermediates", "iter_leaves", "lm_logits",
           "loss", "module_params", "num_params", "read_config_json", "read_json", "run_encoder", "run_seq2seq",
           "run_stack", "score", "shift_right", "tree_map", "unflatten_params"]
