"""The tokenizer room: SentencePiece tokenizers with transformers' T5 ids, and training one."""

from ._sentencepiece import SPIECE_NAME, TOKENIZER_FILES, Tokenizer, train_tokenizer

__all__ = ["SPIECE_NAME", "TOKENIZER_FILES", "Tokenizer", "train_tokenizer"]
