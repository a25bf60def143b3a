"""The decoding room: the K/V cache and the cached step, decoding layouts of the weights
(``prepare_decoding``), ``GenerationConfig``, ``generate`` / ``stream`` and their loops (sampling, beam
search) and score processors."""

from ._cache import DecodeCache, decode_step, init_cache
from ._generate import GenerateOutput, decode_tokens, generate
from ._generation_config import GenerationConfig
from ._logits_processors import Processing
from ._prepare import MIN_PREPARED_NUMEL, OUTPUT_BLOCK, is_prepared, prepare_decoding, relayout_linear
from ._stream import stream
from ._threads import intra_op_threads

__all__ = ["DecodeCache", "GenerateOutput", "GenerationConfig", "MIN_PREPARED_NUMEL", "OUTPUT_BLOCK", "Processing",
           "decode_step", "decode_tokens", "generate", "init_cache", "intra_op_threads", "is_prepared",
           "prepare_decoding", "relayout_linear", "stream"]
