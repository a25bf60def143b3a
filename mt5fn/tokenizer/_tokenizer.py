"""``Tokenizer``: T5-family text <-> ids, id-for-id equal to transformers' ``AutoTokenizer``.

Three forms, read from a folder as ``AutoTokenizer`` reads it (``_files``):

* ``spiece.model`` -- SentencePiece, run through ``tokenizers`` as transformers
  5 runs it (``_unigram``);
* ``tokenizer.json`` -- through the ``tokenizers`` library (``_unigram``);
* ByT5's bytes, which need no file (``_byt5``).

Encoding appends ``</s>``; special tokens written in the text (``<pad>``,
``</s>``, ``<unk>``, ``<extra_id_N>``) become their ids. Decoding an id past
the tokenizer -- the padded rows of real mT5 checkpoints, whose models have
250112 rows for 250100 tokens -- yields nothing, as in transformers.
``save_pretrained`` writes ``tokenizer.json`` + ``tokenizer_config.json``
(+ ``spiece.model`` when there is one), which ``AutoTokenizer`` and through it
CTranslate2's converter read.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Sequence

import torch

from ..checks import preflight
from ..checks import check_bool, check_int, check_optional_int, is_int
from ..checkpoint import atomic_write_bytes, checked_path
from . import _files as F
from ._byt5 import ByteBackend
from ._unigram import (T5_CLASSES, describe_failure, from_spiece, from_tokenizer_json, held_panic_output,
                       library_failure, parse_spiece)

_SENTINEL = re.compile(r"^<extra_id_(\d+)>$")
# transformers' clean_up_tokenization: spaces dropped before punctuation and English contractions.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class _LibraryBackend:
    """A ``tokenizers.Tokenizer`` (built from spiece.model or read from tokenizer.json)."""

    def __init__(self, tokenizer: Any, kind: str, specials: dict[str, str], origin: str, model: bytes | None = None):
        self.tokenizer, self.kind, self.model, self.origin = tokenizer, kind, model, origin
        self.tokenizer_class = "T5Tokenizer"
        self.size = tokenizer.get_vocab_size(with_added_tokens=True)
        ids = {key: tokenizer.token_to_id(token) for key, token in specials.items()}
        missing = [specials[key] for key, value in ids.items() if value is None]
        if missing:
            raise ValueError(f"{origin}: not a T5-convention tokenizer: no {', '.join(map(repr, missing))} token")
        self.pad_id, self.eos_id, self.unk_id = ids["pad_token"], ids["eos_token"], ids["unk_token"]
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, token in added.items() if token.special)
        sentinels = {int(m.group(1)): i for i, token in added.items() if (m := _SENTINEL.match(token.content))}
        self.sentinel_ids = sentinels
        self.extra_ids = len(sentinels)

    def id_to_token(self, index: int) -> str:
        return self.tokenizer.id_to_token(index)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            with held_panic_output():
                encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        except BaseException as error:  # e.g. a file's regex past Oniguruma's retry limit: a Rust panic
            raise self._failed("encode", error) from None
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        try:
            with held_panic_output():
                return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        except BaseException as error:
            raise self._failed("decode", error) from None

    def _failed(self, what: str, error: BaseException) -> BaseException:
        """A ``ValueError`` naming the tokenizer's file for what the library raised (a pyo3
        ``PanicException`` is a ``BaseException`` that ``except Exception`` misses); interrupts pass."""
        if not library_failure(error):
            return error
        return ValueError(f"{self.origin}: the tokenizers library failed to {what} with this tokenizer "
                          f"({describe_failure(error)})")


def _check_text(name: str, text: Any) -> str:
    """``text`` must be a str that is valid Unicode (no lone surrogates from undecodable bytes)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(f"{name} is not valid text: character {error.start} is U+{ord(bad):04X}, a lone surrogate "
                         "(bytes that were not UTF-8, read with errors='surrogateescape'); decode the input as "
                         "UTF-8 first") from None
    return text


class Tokenizer:
    """A T5-family tokenizer (see the module docstring).

    Build it with :meth:`from_pretrained` (a folder or a ``spiece.model``
    file), :meth:`byt5`, or :func:`train_tokenizer`; ``Tokenizer(model_bytes,
    extra_ids=100)`` wraps a serialized SentencePiece model directly.
    """

    def __init__(self, model: bytes, extra_ids: int = 100, *, origin: str = "model",
                 vocab_size: int | None = None, specials: dict[str, str] | None = None):
        if not isinstance(model, (bytes, bytearray)):
            raise TypeError(f"model must be the bytes of a SentencePiece model, got {type(model).__name__}")
        extra_ids = F.check_extra_ids(extra_ids, "extra_ids" if origin == "model" else origin, vocab_size)
        proto = parse_spiece(bytes(model), origin)
        specials = specials or F.special_tokens({})
        try:
            backend = _LibraryBackend(from_spiece(proto, extra_ids, specials), "spiece.model", specials, origin,
                                      bytes(model))
        except ValueError as error:
            raise ValueError(f"{origin}: {error}") from None
        self._init(backend)

    def _init(self, backend: Any, clean_up: bool = False) -> None:
        self._backend = backend
        self._clean_up = clean_up
        self.pad_token_id, self.eos_token_id, self.unk_token_id = backend.pad_id, backend.eos_id, backend.unk_id
        self.extra_ids = backend.extra_ids
        self.pad_token, self.eos_token, self.unk_token = (backend.id_to_token(i) for i in (
            backend.pad_id, backend.eos_id, backend.unk_id))

    @classmethod
    def _from_backend(cls, backend: Any, clean_up: bool = False) -> "Tokenizer":
        tokenizer = cls.__new__(cls)
        tokenizer._init(backend, clean_up)
        return tokenizer

    @classmethod
    def byt5(cls, extra_ids: int = 125) -> "Tokenizer":
        """ByT5's byte-level tokenizer with ``extra_ids`` sentinels (transformers' ``ByT5Tokenizer()``)."""
        return cls._from_backend(ByteBackend(F.check_extra_ids(extra_ids, "extra_ids")))

    @property
    def kind(self) -> str:
        """``"spiece.model"``, ``"tokenizer.json"`` or ``"byt5"``: the form it was read from."""
        return self._backend.kind

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """From a folder (``tokenizer.json``, ``spiece.model`` or a ByT5 ``tokenizer_config.json``,
        as ``AutoTokenizer`` picks them; extra ids from ``tokenizer_config.json``), a ``.model`` file, or a
        ``.gguf`` file (the SentencePiece vocabulary llama.cpp's converter stored in it)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory or a spiece.model file, got {type(path).__name__}")
        path = os.fspath(path)
        if os.path.isfile(path) and _is_gguf(path):
            return cls._from_gguf(path)
        if os.path.isfile(path):
            return cls(_read_bytes(path), origin=path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"path: no such tokenizer directory or spiece.model file {path!r}")
        form = F.find_tokenizer(path)
        config_file = os.path.join(path, F.TOKENIZER_CONFIG_NAME)
        config = F.read_optional_json(path, F.TOKENIZER_CONFIG_NAME)
        vocab_size = F.model_vocab_size(path)
        clean_up = config.get("clean_up_tokenization_spaces") is True
        specials = F.special_tokens({**F.read_optional_json(path, F.SPECIAL_TOKENS_MAP_NAME), **config})
        if form == "byt5":
            return cls._from_backend(_byt5_backend(path, config, config_file, vocab_size), clean_up)
        if form == F.TOKENIZER_JSON_NAME:
            file = checked_path(path, F.TOKENIZER_JSON_NAME)
            text = _read_bytes(file)
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            name = config.get("tokenizer_class", "T5Tokenizer")
            t5 = name in T5_CLASSES
            backend = _LibraryBackend(from_tokenizer_json(decoded, file, t5, specials), F.TOKENIZER_JSON_NAME,
                                      specials, file)
            if not t5 and isinstance(name, str):
                backend.tokenizer_class = name  # saved as it came: its pipeline is the file's own
            spiece = checked_path(path, F.SPIECE_NAME)
            if os.path.isfile(spiece):
                backend.model = _read_bytes(spiece)  # kept so that a save writes it too
            return cls._from_backend(backend, clean_up)
        extra_ids = F.check_extra_ids(config.get("extra_ids", 100), config_file, vocab_size)
        file = checked_path(path, F.SPIECE_NAME)
        tokenizer = cls(_read_bytes(file), extra_ids=extra_ids, origin=file, vocab_size=vocab_size, specials=specials)
        tokenizer._clean_up = clean_up
        return tokenizer

    @classmethod
    def _from_gguf(cls, file: str) -> "Tokenizer":
        """The vocabulary llama.cpp's converter stored in a ``.gguf`` file (see ``_gguf``)."""
        from ._gguf import spiece_from_gguf
        from ..checkpoint._gguf_read import open_reader

        model, extra_ids = spiece_from_gguf(open_reader(file), file)
        return cls(model, extra_ids=extra_ids, origin=file)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json`` (and
        ``spiece.model`` when it has one) into directory ``path`` (created if needed; each file
        replaced atomically). ``transformers.AutoTokenizer.from_pretrained(path)`` reads the result."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"path: {path!r} exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        backend = self._backend
        special = {"eos_token": self.eos_token, "unk_token": self.unk_token, "pad_token": self.pad_token}
        files: dict[str, bytes] = {}
        if backend.kind == "byt5":
            config = {"tokenizer_class": F.BYT5_CLASS, "extra_ids": 0, **special,
                      "extra_special_tokens": backend.sentinels}
            files[F.ADDED_TOKENS_NAME] = _dumps({t: backend.token_to_id(t) for t in backend.sentinels})
        else:
            sentinels = [f"<extra_id_{n}>" for n in range(self.extra_ids)]
            config = {"tokenizer_class": backend.tokenizer_class, "extra_ids": self.extra_ids, **special,
                      "additional_special_tokens": sentinels}
            special["additional_special_tokens"] = sentinels
            files[F.TOKENIZER_JSON_NAME] = backend.tokenizer.to_str(pretty=True).encode("utf-8")
            if backend.model is not None:
                files[F.SPIECE_NAME] = backend.model
        config.update(model_max_length=1_000_000_000, clean_up_tokenization_spaces=self._clean_up)
        files[F.TOKENIZER_CONFIG_NAME] = _dumps(config)
        files[F.SPECIAL_TOKENS_MAP_NAME] = _dumps(special)
        for name, data in files.items():
            atomic_write_bytes(os.path.join(path, name), data)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """Every id: pieces (or bytes) plus special tokens and sentinels."""
        return self._backend.size

    def __len__(self) -> int:
        return self._backend.size

    def sentinel_id(self, n: int) -> int:
        """Id of ``<extra_id_n>`` (``vocab_size - 1 - n`` for SentencePiece tokenizers)."""
        check_int("n", n, 0, self.extra_ids - 1, words=f"an int in [0, extra_ids={self.extra_ids})")
        index = self._backend.token_to_id(f"<extra_id_{n}>")
        if index is None:
            raise ValueError(f"n: the tokenizer has no <extra_id_{n}>")
        return index

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        ids = self._check_ids(ids)
        bad = [i for i in ids if i >= len(self)]
        if bad:
            raise ValueError(f"ids: {bad[0]!r} is not a token id in [0, vocab_size={len(self)})")
        return [self._backend.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int | None]:
        """Id of each token string (``None`` for a string that is no token)."""
        if isinstance(tokens, str):
            raise TypeError("tokens must be a list of str")
        return [self._backend.token_to_id(_check_text(f"tokens[{i}]", t)) for i, t in enumerate(tokens)]

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, vocab_size={self.vocab_size}, extra_ids={self.extra_ids})"

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` followed by ``</s>`` (no BOS), as ``AutoTokenizer(text).input_ids``."""
        return self._backend.encode_batch([_check_text("text", text)])[0]

    def batch_encode(self, texts: Sequence[str], padding: bool | str = True, max_length: int | None = None,
                     truncation: bool = False, return_tensors: str | None = "pt") -> dict[str, Any]:
        """``{"input_ids", "attention_mask"}`` for a list of texts, right-padded with ``<pad>``.

        ``padding``: ``True``/``"longest"`` (to the longest row), ``"max_length"``
        (to ``max_length``) or ``False``/``"do_not_pad"``. ``truncation=True`` cuts
        rows to ``max_length`` keeping the final ``</s>``. ``return_tensors="pt"``
        gives LongTensors ``(B, T)``, ``None`` lists. ``max_length`` must be used by
        one of the two options (transformers would silently ignore it).
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}; use encode() for one text")
        for i, text in enumerate(texts):
            _check_text(f"texts[{i}]", text)
        if isinstance(padding, bool):
            padding = "longest" if padding else "do_not_pad"
        if padding not in ("longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        check_bool("truncation", truncation)
        check_optional_int("max_length", max_length, 1, words="a positive int or None")
        if max_length is None and (truncation or padding == "max_length"):
            raise ValueError(f"max_length is required with truncation={truncation!r} / padding={padding!r}")
        if max_length is not None and not truncation and padding != "max_length":
            raise ValueError(f"max_length={max_length} would be ignored: pass truncation=True or "
                             f"padding='max_length'")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if padding == "max_length":  # ids and mask, as lists and as tensors: 4 x 8 bytes a position
            preflight.check_buffers("batch_encode", f"padding to max_length={max_length} for {len(texts)} texts",
                          [("padded ids and attention mask", (4, len(texts), max_length), 8)], None)
        rows = self._backend.encode_batch(list(texts)) if texts else []
        if truncation:
            rows = [row if len(row) <= max_length else row[:max_length - 1] + [self.eos_token_id] for row in rows]
        masks = [[1] * len(row) for row in rows]
        if padding != "do_not_pad":
            width = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
            for i, row in enumerate(rows):
                if len(row) > width:
                    raise ValueError(f"texts[{i}] encodes to {len(row)} tokens, more than max_length={width}; "
                                     f"pass truncation=True")
                masks[i] = masks[i] + [0] * (width - len(row))
                rows[i] = row + [self.pad_token_id] * (width - len(row))
        if return_tensors is None:
            return {"input_ids": rows, "attention_mask": masks}
        if len({len(row) for row in rows}) > 1:
            raise ValueError("rows have different lengths; return_tensors='pt' needs padding")
        width = len(rows[0]) if rows else (max_length if padding == "max_length" else 0)
        return {"input_ids": torch.tensor(rows, dtype=torch.long).reshape(len(rows), width),
                "attention_mask": torch.tensor(masks, dtype=torch.long).reshape(len(rows), width)}

    __call__ = batch_encode

    # ------------------------------------------------------------------ decoding
    def _check_ids(self, ids: Any) -> list[int]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() > 1 or ids.is_floating_point() or ids.is_complex():
                raise ValueError(f"ids must be a 1-D integer tensor, got {ids.dim()}-D {ids.dtype}")
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        ids = list(ids)
        for i in ids:
            if not is_int(i, 0):
                raise ValueError(f"ids: {i!r} is not a token id (a non-negative int)")
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ``skip_special_tokens`` drops ``<pad>``, ``</s>``, ``<unk>`` and sentinels.
        Ids past the tokenizer (a model's padded vocabulary rows) decode to nothing."""
        ids = [i for i in self._check_ids(ids) if i < len(self)]
        text = self._backend.decode(ids, bool(skip_special_tokens))
        if self._clean_up:
            for old, new in _CLEAN_UP:
                text = text.replace(old, new)
        return text

    def batch_decode(self, sequences: Iterable[Sequence[int]] | torch.Tensor,
                     skip_special_tokens: bool = False) -> list[str]:
        """:meth:`decode` of each row (a 2-D tensor or a list of id lists)."""
        if isinstance(sequences, torch.Tensor):
            if sequences.dim() != 2:
                raise ValueError(f"sequences must be a 2-D tensor, got shape {tuple(sequences.shape)}")
            sequences = sequences.tolist()
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Iterable):
            raise TypeError(f"sequences must be a 2-D tensor or a list of id lists, got {type(sequences).__name__}")
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in sequences]


def _dumps(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _is_gguf(file: str) -> bool:
    with open(file, "rb") as handle:
        return handle.read(4) == b"GGUF"


def _read_bytes(file: str) -> bytes:
    try:
        with open(file, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise OSError(f"{file}: cannot be read ({error.strerror or error})") from None


def _byt5_backend(path: str, config: dict[str, Any], config_file: str, vocab_size: int | None) -> ByteBackend:
    """ByT5 sentinels from ``added_tokens.json`` (ids), the config's token list, or ``extra_ids``."""
    added = F.read_optional_json(path, F.ADDED_TOKENS_NAME)
    if added:
        if len(added) > F.MAX_EXTRA_IDS:
            raise ValueError(f"{os.path.join(path, F.ADDED_TOKENS_NAME)}: {len(added)} added tokens, more than "
                             f"{F.MAX_EXTRA_IDS}")
        order = sorted(added.items(), key=lambda item: item[1] if isinstance(item[1], int) else -1)
        first = 3 + 256
        if [index for _token, index in order] != list(range(first, first + len(order))):
            raise ValueError(f"{os.path.join(path, F.ADDED_TOKENS_NAME)}: ByT5 added tokens must have the ids "
                             f"{first}, {first + 1}, ... in order")
        sentinels = [token for token, _index in order]
    else:
        listed = config.get("extra_special_tokens") or config.get("additional_special_tokens")
        if isinstance(listed, list) and listed and all(isinstance(t, str) for t in listed):
            F.check_extra_ids(len(listed), config_file, vocab_size)
            sentinels = [t for t in listed if t not in ("<pad>", "</s>", "<unk>")]
        else:
            sentinels = [f"<extra_id_{n}>" for n in range(F.check_extra_ids(config.get("extra_ids", 125),
                                                                              config_file, vocab_size))]
    return ByteBackend(sentinels=sentinels)
