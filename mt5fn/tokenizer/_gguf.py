"""The SentencePiece model inside a GGUF file (``tokenizer.ggml.*``), rebuilt as ``spiece.model`` bytes.

llama.cpp's converter copies every piece of ``spiece.model`` (text, score,
type: its token types number as SentencePiece's do), the precompiled
normaliser and the ``add_space_prefix`` / ``remove_extra_whitespaces``
flags, then pads the vocabulary to the config's size with ``[PAD{i}]``
pieces of type UNUSED. Dropping that padding gives back the model the file
was made from; the padding rows become the ``<extra_id_N>`` sentinels (up to
100, T5's count), which is where transformers' tokenizer puts them.
"""

from __future__ import annotations

import re
from typing import Any

_PADDING = re.compile(r"^\[PAD\d+\]$")
_UNUSED = 5


def spiece_from_gguf(reader: Any, file: str) -> tuple[bytes, int]:
    """``(serialized ModelProto, extra_ids)`` from a GGUF reader; ValueError names the file."""
    from sentencepiece import sentencepiece_model_pb2

    def key(name: str, default: Any = None) -> Any:
        item = reader.fields.get(name)
        return default if item is None else item.contents()

    model = key("tokenizer.ggml.model")
    if model != "t5":
        raise ValueError(f"{file}: holds no SentencePiece unigram vocabulary (tokenizer.ggml.model is {model!r}, "
                         "not 't5')")
    tokens, scores, types = (key(f"tokenizer.ggml.{n}") for n in ("tokens", "scores", "token_type"))
    if not tokens or scores is None or types is None or not len(tokens) == len(scores) == len(types):
        raise ValueError(f"{file}: tokenizer.ggml.tokens, scores and token_type are missing or of unequal length")
    count = len(tokens)
    while count and types[count - 1] == _UNUSED and _PADDING.match(tokens[count - 1]):
        count -= 1  # the converter's padding up to the embedding's rows
    proto = sentencepiece_model_pb2.ModelProto()
    for text, score, kind in zip(tokens[:count], scores[:count], types[:count]):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, float(score), int(kind)
    unknown = [i for i, kind in enumerate(types[:count]) if kind == 2]
    proto.trainer_spec.model_type = 1  # UNIGRAM
    proto.trainer_spec.unk_id = unknown[0] if unknown else 2
    proto.trainer_spec.eos_id = int(key("tokenizer.ggml.eos_token_id", 1))
    proto.trainer_spec.pad_id = int(key("tokenizer.ggml.padding_token_id", 0))
    proto.trainer_spec.bos_id = -1
    charsmap = key("tokenizer.ggml.precompiled_charsmap")
    normalizer = proto.normalizer_spec
    normalizer.add_dummy_prefix = bool(key("tokenizer.ggml.add_space_prefix", True))
    normalizer.remove_extra_whitespaces = bool(key("tokenizer.ggml.remove_extra_whitespaces", True))
    if charsmap is not None and len(charsmap):
        normalizer.name = "nmt_nfkc"
        normalizer.precompiled_charsmap = bytes(bytearray(int(b) & 0xFF for b in charsmap))
    else:
        normalizer.name = "identity"
    return proto.SerializeToString(), min(100, len(tokens) - count)
