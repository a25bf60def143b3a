"""The model room: config and presets, the parameter pytree and its tree helpers,
``encode`` / ``decode`` / ``forward`` / ``loss``, the ``nn.Module`` facade, and the
boundary checks every public function runs (``_validate``)."""

from ._config import MT5Config, read_config_json
from ._intermediates import intermediates
from ._json import read_json
from ._model import decode, encode, forward, lm_logits, loss, shift_right
from ._module import MT5Module, module_params
from ._params import flatten_params, init_params, iter_leaves, num_params, tree_map, unflatten_params
from ._score import Scores, score
from ._validate import check_device, check_seed

__all__ = ["MT5Config", "MT5Module", "Scores", "check_device", "check_seed", "decode", "encode", "flatten_params",
           "forward", "init_params", "intermediates", "iter_leaves", "lm_logits", "loss", "module_params", "num_params",
           "read_config_json", "read_json", "score", "shift_right", "tree_map", "unflatten_params"]
