"""Training a T5-convention SentencePiece unigram tokenizer (``spiece.model``) on a corpus."""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Any, Iterable

from ..checks import check_int, check_real
from . import _files as F
from ._tokenizer import Tokenizer, _check_text


def _as_files(data: Any) -> list[str] | None:
    """File paths if ``data`` names files (a path, or a list of existing paths), else None."""
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    if isinstance(data, (list, tuple)) and data and all(
            isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item and os.path.isfile(item))
            for item in data):
        return [os.fspath(item) for item in data]
    return None


def _read_lines(file: str) -> Iterable[str]:
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as error:
                raise ValueError(f"{file}: line {number} is not UTF-8 text ({error.reason} at byte "
                                 f"{error.start})") from None


def train_tokenizer(texts_or_files: Any, out_dir: str | os.PathLike, vocab_size: int = 8000,
                    extra_ids: int = 100, *, byte_fallback: bool = False, character_coverage: float = 1.0,
                    max_sentence_length: int = 16384, num_threads: int | None = None) -> Tokenizer:
    """Train a T5-convention unigram ``spiece.model`` and save it (with configs) into ``out_dir``.

    ``texts_or_files`` is an iterable of texts, or a text-file path (one text
    per line), or a list of such paths. ``vocab_size`` counts pieces only
    (the tokenizer's ``vocab_size`` adds ``extra_ids``) and is a soft limit:
    a corpus too small to fill it yields fewer pieces rather than an error.
    Lines longer than ``max_sentence_length`` bytes are skipped by
    SentencePiece (a warning says how many; a corpus of only such lines is an
    error). ``byte_fallback=True`` spells unknown characters as bytes in
    ``sentencepiece``, which transformers' ``T5Tokenizer`` does not do (ids
    then differ from it on unknown characters); the default matches it.
    """
    import sentencepiece

    check_int("vocab_size", vocab_size, 8)
    F.check_extra_ids(extra_ids, "extra_ids")
    check_real("character_coverage", character_coverage, above=0.0, at_most=1.0, words="in (0, 1]")
    check_int("max_sentence_length", max_sentence_length, 1, words="a positive int")
    files = _as_files(texts_or_files)
    if files is not None:
        for file in files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"texts_or_files: no such file {file!r}")
        lines: Iterable[Any] = (line for file in files for line in _read_lines(file))
    elif isinstance(texts_or_files, Iterable):
        lines = iter(texts_or_files)
    else:
        raise TypeError(f"texts_or_files must be texts or file paths, got {type(texts_or_files).__name__}")
    sentences = [line for i, text in enumerate(lines)
                 for line in _check_text(f"texts_or_files[{i}]", text).split("\n") if line.strip()]
    if not sentences:
        raise ValueError("texts_or_files: the corpus is empty (no non-blank lines)")
    fitting = [line for line in sentences if len(line.encode("utf-8")) <= max_sentence_length]
    if not fitting:
        raise ValueError(f"texts_or_files: every line of the corpus is longer than max_sentence_length="
                         f"{max_sentence_length} bytes, and SentencePiece skips such lines; split the text into "
                         "shorter lines (one sentence or paragraph each) or raise max_sentence_length")
    if len(fitting) < len(sentences):
        warnings.warn(f"train_tokenizer: {len(sentences) - len(fitting)} of {len(sentences)} lines are longer "
                      f"than max_sentence_length={max_sentence_length} bytes and are skipped", stacklevel=2)

    def train(size: int) -> bytes:
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(fitting), model_writer=model, model_type="unigram",
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
