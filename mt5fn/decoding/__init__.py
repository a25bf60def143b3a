"""The decoding room: the K/V cache and the cached step, decoding layouts of the weights
(``prepare_decoding``), ``GenerationConfig``, ``generate`` / ``stream`` and their loops (sampling, beam
search) and score processors. (The weight-leaf forms themselves are made by ``mt5fn.kernels``.)"""

from ..kernels import MIN_PREPARED_NUMEL, OUTPUT_BLOCK, relayout_linear
from ._cache import DecodeCache, decode_step, init_cache
from ._generate import GenerateOutput, decode_tokens, generate
from ._generation_config import GenerationConfig
from ._logits_processors import Processing
from ._prepare import is_prepared, prepare_decoding
from ._stream import stream
from ._threads import intra_op_threads

__all__ = ["DecodeCache", "GenerateOutput", "GenerationConfig", "MIN_PREPARED_NUMEL", "OUTPUT_BLOCK", "Processing",
           "decode_step", "decode_tokens", "generate", "init_cache", "intra_op_threads", "is_prepared",
           "prepare_decoding", "relayout_linear", "stream"]
