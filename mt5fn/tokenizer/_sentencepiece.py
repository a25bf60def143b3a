"""SentencePiece tokenizer with T5's conventions, id-for-id equal to transformers' ``T5Tokenizer``.

T5 / mT5 / UMT5 read text through a SentencePiece unigram model (Kudo 2018,
"Subword Regularization"; Kudo & Richardson 2018, "SentencePiece"):
``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no BOS, EOS appended to every
sequence, and ``extra_ids`` sentinels ``<extra_id_N>`` appended after the
pieces in reverse, so ``<extra_id_N>`` is id ``vocab_size - 1 - N``
(Raffel et al. 2020, section 3.1.4, span corruption).

transformers 5 runs the same model through its ``tokenizers`` backend, which
differs from plain ``sentencepiece`` in three places this module reproduces:

* special tokens written in the text (``<extra_id_0>``, ``</s>``, ``<pad>``,
  ``<unk>``) are matched first and become their ids; the text between them
  is encoded piece by piece;
* text is split on every Unicode whitespace character after normalisation
  (``sentencepiece`` keeps a few, e.g. U+0085, as ordinary characters);
* decoding joins the token strings (``<unk>`` stays ``<unk>``, not `` ⁇ ``),
  turns ``▁`` into spaces and drops the ``▁``s of the first token only.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from typing import Any, Iterable, Sequence

import torch

from ..checkpoint._atomic import atomic_write_bytes

SPIECE_NAME = "spiece.model"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
# Every file a tokenizer directory may hold (a save replaces all of them).
TOKENIZER_FILES = (SPIECE_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME, "tokenizer.json", "added_tokens.json")
# Unicode White_Space: what transformers' WhitespaceSplit (Rust char::is_whitespace) splits on.
_WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_METASPACE = "\u2581"


def _processor(model: bytes, origin: str):
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_proto=model)
    except (RuntimeError, OSError, TypeError) as error:
        raise ValueError(f"{origin}: not a valid SentencePiece model ({error})") from None


class Tokenizer:
    """A T5-convention SentencePiece tokenizer (see the module docstring).

    Build it with :meth:`from_pretrained` (a checkpoint directory or a
    ``spiece.model`` file) or :func:`train_tokenizer`; ``Tokenizer(model_bytes,
    extra_ids=100)`` wraps a serialized model directly.
    """

    def __init__(self, model: bytes, extra_ids: int = 100, *, origin: str = "model"):
        if not isinstance(model, (bytes, bytearray)):
            raise TypeError(f"model must be the bytes of a SentencePiece model, got {type(model).__name__}")
        if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
            raise ValueError(f"extra_ids must be a non-negative int, got {extra_ids!r}")
        self._model = bytes(model)
        self._sp = _processor(self._model, origin)
        self.extra_ids = extra_ids
        self._num_pieces = self._sp.get_piece_size()
        self.pad_token_id, self.eos_token_id, self.unk_token_id = (
            self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id())
        if min(self.pad_token_id, self.eos_token_id, self.unk_token_id) < 0:
            raise ValueError(f"{origin}: not a T5-convention SentencePiece model: it needs pad, eos and unk "
                             f"pieces (pad={self.pad_token_id}, eos={self.eos_token_id}, unk={self.unk_token_id})")
        self._tokens = [self._sp.id_to_piece(i) for i in range(self._num_pieces)]
        self._tokens += [f"<extra_id_{n}>" for n in range(extra_ids - 1, -1, -1)]
        self.pad_token, self.eos_token, self.unk_token = (
            self._tokens[self.pad_token_id], self._tokens[self.eos_token_id], self._tokens[self.unk_token_id])
        self._special_ids = frozenset([self.pad_token_id, self.eos_token_id, self.unk_token_id,
                                       *range(self._num_pieces, len(self._tokens))])
        self._special_by_text = {self._tokens[i]: i for i in sorted(self._special_ids)}
        self._special_re = re.compile("|".join(
            re.escape(text) for text in sorted(self._special_by_text, key=len, reverse=True)))
        # Whitespace the normaliser keeps as a character would not split words here but does in
        # transformers: map it to a plain space first.
        self._space_table = {ord(ch): " " for ch in _WHITE_SPACE if ch in self._sp.normalize(f"a{ch}b")}
        self._collapses = (self._sp.normalize("a \t b") == self._sp.normalize("a b")
                           and self._sp.normalize(" a ") == self._sp.normalize("a"))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """From a directory holding ``spiece.model`` (``extra_ids`` read from its
        ``tokenizer_config.json``, default 100) or from the ``.model`` file itself."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory or a spiece.model file, got {type(path).__name__}")
        path = os.fspath(path)
        extra_ids = 100
        if os.path.isdir(path):
            config_file = os.path.join(path, TOKENIZER_CONFIG_NAME)
            if os.path.isfile(config_file):
                try:
                    with open(config_file, encoding="utf-8") as handle:
                        config = json.load(handle)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{config_file}: not valid JSON ({error})") from None
                value = config.get("extra_ids", 100) if isinstance(config, dict) else 100
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{config_file}: extra_ids must be a non-negative int, got {value!r}")
                extra_ids = value
            path = os.path.join(path, SPIECE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing; a tokenizer needs a SentencePiece model ({SPIECE_NAME})")
        with open(path, "rb") as handle:
            model = handle.read()
        return cls(model, extra_ids=extra_ids, origin=path)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``spiece.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``
        into directory ``path`` (created if needed; each file replaced atomically).
        ``transformers.AutoTokenizer.from_pretrained(path)`` reads the result."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"path: {path!r} exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        sentinels = [f"<extra_id_{n}>" for n in range(self.extra_ids)]
        special = {"eos_token": self.eos_token, "unk_token": self.unk_token, "pad_token": self.pad_token,
                   "additional_special_tokens": sentinels}
        config = {"tokenizer_class": "T5Tokenizer", "extra_ids": self.extra_ids, **special,
                  "model_max_length": 1_000_000_000, "clean_up_tokenization_spaces": False}

        def dumps(value: dict) -> bytes:
            return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

        atomic_write_bytes(os.path.join(path, SPIECE_NAME), self._model)
        atomic_write_bytes(os.path.join(path, TOKENIZER_CONFIG_NAME), dumps(config))
        atomic_write_bytes(os.path.join(path, SPECIAL_TOKENS_MAP_NAME), dumps(special))

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """SentencePiece pieces plus ``extra_ids`` sentinels."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def sentinel_id(self, n: int) -> int:
        """Id of ``<extra_id_n>``: ``vocab_size - 1 - n``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < self.extra_ids:
            raise ValueError(f"n must be an int in [0, extra_ids={self.extra_ids}), got {n!r}")
        return len(self._tokens) - 1 - n

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[i] for i in self._check_ids(ids)]

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, extra_ids={self.extra_ids})"

    # ------------------------------------------------------------------ encoding
    def _segments(self, text: str) -> list[str | int]:
        """Text split into plain segments (str) and special-token ids (int)."""
        out: list[str | int] = []
        start = 0
        for match in self._special_re.finditer(text):
            out += [text[start:match.start()], self._special_by_text[match.group()]]
            start = match.end()
        out.append(text[start:])
        return out

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        plans, pieces = [], []
        for text in texts:
            plan = []
            for part in self._segments(text):
                if isinstance(part, int):
                    plan.append(part)
                    continue
                if self._collapses:
                    words = [part.translate(self._space_table)]
                else:  # the model keeps whitespace runs; transformers splits words after normalising
                    words = [w for w in re.split(f"[{_WHITE_SPACE}{_METASPACE}]+", self._sp.normalize(part)) if w]
                plan.append(slice(len(pieces), len(pieces) + len(words)))
                pieces += words
            plans.append(plan)
        encoded = self._sp.encode(pieces) if pieces else []
        out = []
        for plan in plans:
            ids: list[int] = []
            for step in plan:
                if isinstance(step, int):
                    ids.append(step)
                else:
                    for word in encoded[step]:
                        ids += word
            ids.append(self.eos_token_id)
            out.append(ids)
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` followed by ``</s>`` (no BOS), as ``T5Tokenizer(text).input_ids``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._encode_many([text])[0]

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
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if isinstance(padding, bool):
            padding = "longest" if padding else "do_not_pad"
        if padding not in ("longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if not isinstance(truncation, bool):
            raise ValueError(f"truncation must be a bool, got {truncation!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if max_length is None and (truncation or padding == "max_length"):
            raise ValueError(f"max_length is required with truncation={truncation!r} / padding={padding!r}")
        if max_length is not None and not truncation and padding != "max_length":
            raise ValueError(f"max_length={max_length} would be ignored: pass truncation=True or "
                             f"padding='max_length'")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        rows = self._encode_many(texts)
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
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self._tokens):
                raise ValueError(f"ids: {i!r} is not a token id in [0, vocab_size={len(self._tokens)})")
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ``skip_special_tokens`` drops ``<pad>``, ``</s>``, ``<unk>`` and sentinels."""
        ids = self._check_ids(ids)
        tokens = [self._tokens[i] for i in ids if not (skip_special_tokens and i in self._special_ids)]
        if not tokens:
            return ""
        return tokens[0].replace(_METASPACE, "") + "".join(tokens[1:]).replace(_METASPACE, " ")

    def batch_decode(self, sequences: Iterable[Sequence[int]] | torch.Tensor,
                     skip_special_tokens: bool = False) -> list[str]:
        """:meth:`decode` of each row (a 2-D tensor or a list of id lists)."""
        if isinstance(sequences, torch.Tensor):
            if sequences.dim() != 2:
                raise ValueError(f"sequences must be a 2-D tensor, got shape {tuple(sequences.shape)}")
            sequences = sequences.tolist()
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in sequences]


def _as_files(data: Any) -> list[str] | None:
    """File paths if ``data`` names files (a path, or a list of existing paths), else None."""
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    if isinstance(data, (list, tuple)) and data and all(
            isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item and os.path.isfile(item))
            for item in data):
        return [os.fspath(item) for item in data]
    return None


def train_tokenizer(texts_or_files: Any, out_dir: str | os.PathLike, vocab_size: int = 8000,
                    extra_ids: int = 100, *, byte_fallback: bool = False, character_coverage: float = 1.0,
                    max_sentence_length: int = 16384, num_threads: int | None = None) -> Tokenizer:
    """Train a T5-convention unigram ``spiece.model`` and save it (with configs) into ``out_dir``.

    ``texts_or_files`` is an iterable of texts, or a text-file path (one text
    per line), or a list of such paths. ``vocab_size`` counts pieces only
    (the tokenizer's ``vocab_size`` adds ``extra_ids``) and is a soft limit:
    a corpus too small to fill it yields fewer pieces rather than an error.
    ``byte_fallback=True`` spells unknown characters as bytes in
    ``sentencepiece``, which transformers' ``T5Tokenizer`` does not do (ids
    then differ from it on unknown characters); the default matches it.
    """
    import sentencepiece

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
        raise ValueError(f"vocab_size must be an int >= 8, got {vocab_size!r}")
    if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
        raise ValueError(f"extra_ids must be a non-negative int, got {extra_ids!r}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage!r}")
    files = _as_files(texts_or_files)
    if files is not None:
        for file in files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"texts_or_files: no such file {file!r}")
        lines = (line.rstrip("\n") for file in files for line in open(file, encoding="utf-8"))
    elif isinstance(texts_or_files, Iterable):
        lines = iter(texts_or_files)
    else:
        raise TypeError(f"texts_or_files must be texts or file paths, got {type(texts_or_files).__name__}")
    sentences = [line for text in lines for line in _check_text(text).split("\n") if line.strip()]
    if not sentences:
        raise ValueError("texts_or_files: the corpus is empty (no non-blank lines)")

    def train(size: int) -> bytes:
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, model_type="unigram",
            vocab_size=size, hard_vocab_limit=False, character_coverage=character_coverage,
            byte_fallback=byte_fallback, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", normalization_rule_name="nmt_nfkc",
            max_sentence_length=max_sentence_length, num_threads=num_threads or min(4, os.cpu_count() or 1),
            minloglevel=2,
        )
        return model.getvalue()

    try:
        try:
            model = train(vocab_size)
        except RuntimeError as error:
            # Every character kept by character_coverage needs a piece: a small vocabulary over a
            # corpus with many characters (CJK) cannot be trained. Grow it to the smallest that can.
            match = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
            if not match:
                raise
            needed = int(match.group(1))
            warnings.warn(f"train_tokenizer: vocab_size={vocab_size} cannot hold the corpus's characters; "
                          f"training with vocab_size={needed} (or lower character_coverage)", stacklevel=2)
            model = train(needed)
    except RuntimeError as error:
        raise ValueError(f"sentencepiece could not train on this corpus with vocab_size={vocab_size}: "
                         f"{error}") from None
    tokenizer = Tokenizer(model, extra_ids=extra_ids, origin="trained model")
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts_or_files: expected str texts, got {type(text).__name__}")
    return text
