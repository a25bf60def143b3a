"""The tokenizer room: T5-family tokenizers with transformers' ids (SentencePiece ``spiece.model``,
``tokenizer.json`` through the ``tokenizers`` library, ByT5 bytes), and training a ``spiece.model``."""

from ._files import (MAX_EXTRA_IDS, SPIECE_NAME, TOKENIZER_CONFIG_NAME, TOKENIZER_FILES, TOKENIZER_JSON_NAME,
                     has_tokenizer)
from ._tokenizer import Tokenizer
from ._train import train_tokenizer
from ._unigram import hold_panic_output

__all__ = ["hold_panic_output", "MAX_EXTRA_IDS", "SPIECE_NAME", "TOKENIZER_CONFIG_NAME", "TOKENIZER_FILES", "TOKENIZER_JSON_NAME",
           "Tokenizer", "has_tokenizer", "train_tokenizer"]
