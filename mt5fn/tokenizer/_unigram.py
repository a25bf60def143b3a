"""SentencePiece unigram tokenizers through Hugging Face ``tokenizers``, built as transformers 5 builds them.

T5 / mT5 / UMT5 read text with a SentencePiece unigram model (Kudo 2018,
"Subword Regularization"; Kudo & Richardson 2018, "SentencePiece"):
``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no BOS, EOS appended to every
sequence, and ``extra_ids`` sentinels appended after the pieces in reverse, so
``<extra_id_N>`` is id ``vocab_size - 1 - N`` (Raffel et al. 2020, section
3.1.4, span corruption).

transformers 5's ``T5Tokenizer`` runs that model in the ``tokenizers``
library, whatever the folder holds (``spiece.model`` or ``tokenizer.json``),
with one fixed pipeline: the model's precompiled SentencePiece normaliser,
a split on whitespace then on ``▁`` with a ``▁`` prepended to every word, the
unigram model over the pieces plus the sentinels, special tokens (``<pad>``,
``</s>``, ``<unk>``, sentinels) matched in the raw text first, and ``</s>``
appended. This module builds the same ``tokenizers.Tokenizer`` from the same
parts, so ids are transformers' by construction; the tokenizer work itself
is the library's. (Where that pipeline and SentencePiece disagree -- a
combining mark after a character the normaliser rewrites is dropped by the
former -- ids follow transformers.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import tempfile
from typing import Any, Iterator

from ..checks import check_depth, is_int, short_repr

_METASPACE = "\u2581"
T5_CLASSES = ("T5Tokenizer", "T5TokenizerFast", "MT5Tokenizer", "MT5TokenizerFast", "UMT5Tokenizer",
              "UMT5TokenizerFast")


def parse_spiece(model: bytes, origin: str) -> Any:
    """The ``ModelProto`` of a serialized SentencePiece model (via sentencepiece's own protobuf schema)."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    if model.lstrip()[:1] in (b"{", b"["):  # e.g. ``--model DIR/config.json``: a JSON file, not a model
        raise ValueError(f"{origin}: a JSON file, not a SentencePiece model; give the checkpoint or tokenizer "
                         "folder that holds it")
    try:
        proto.ParseFromString(model)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{origin}: not a valid SentencePiece model ({error})") from None
    if not proto.pieces:
        raise ValueError(f"{origin}: not a valid SentencePiece model (it has no pieces)")
    return proto


def t5_pipeline(vocab: list[tuple[str, float]], unk_id: int, charsmap: bytes | None,
                added: list[dict[str, Any]], eos_token: str) -> Any:
    """A ``tokenizers.Tokenizer`` with transformers 5's ``T5Tokenizer`` pipeline (see the module docstring).

    ``added``: the added tokens, ``{"content", "special", "normalized", "lstrip", "rstrip", "single_word"}``,
    in id order; each one already in ``vocab`` keeps its id there.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    tokenizer = Tokenizer(Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    if charsmap:
        tokenizer.normalizer = normalizers.Precompiled(charsmap)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)])
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tokens = [AddedToken(t["content"], single_word=bool(t.get("single_word", False)), lstrip=bool(t.get("lstrip")),
                         rstrip=bool(t.get("rstrip")), normalized=bool(t.get("normalized", False)),
                         special=bool(t.get("special", True))) for t in added]
    special = [t for t in tokens if t.special]
    plain = [t for t in tokens if not t.special]
    if special:
        tokenizer.add_special_tokens(special)
    if plain:
        tokenizer.add_tokens(plain)
    eos_id = tokenizer.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"the vocabulary has no end-of-sequence token {eos_token!r}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", eos_token], pair=["$A", eos_token, "$B", eos_token], special_tokens=[(eos_token, eos_id)])
    return tokenizer


def from_spiece(proto: Any, extra_ids: int, specials: dict[str, str]) -> Any:
    """The tokenizer transformers builds from ``spiece.model`` plus ``extra_ids`` sentinels."""
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    vocab += [(f"<extra_id_{n}>", 0.0) for n in range(extra_ids - 1, -1, -1)]
    added: list[dict[str, Any]] = []
    for index, piece in enumerate(proto.pieces):
        if piece.type in (2, 3, 4):  # unknown, control (<pad>, </s>) and user-defined pieces
            added.append({"content": piece.piece, "special": piece.type != 4, "id": index})
    present = {t["content"] for t in added}
    for token in (specials["pad_token"], specials["eos_token"], specials["unk_token"]):
        if token not in present and any(p.piece == token for p in proto.pieces):
            added.append({"content": token, "special": True, "id": next(
                i for i, p in enumerate(proto.pieces) if p.piece == token)})
    added.sort(key=lambda t: t["id"])
    added += [{"content": f"<extra_id_{n}>", "special": True} for n in range(extra_ids)]
    charsmap = proto.normalizer_spec.precompiled_charsmap or None
    return t5_pipeline(vocab, proto.trainer_spec.unk_id, charsmap, added, specials["eos_token"])


def from_tokenizer_json(text: str, origin: str, t5: bool, specials: dict[str, str]) -> Any:
    """``tokenizer.json`` as transformers reads it: with ``t5`` (a T5-family ``tokenizer_class``) the
    vocabulary, normaliser charsmap and added tokens go into the T5 pipeline; otherwise the file is
    used as it is."""
    from tokenizers import Tokenizer

    check_depth(origin, text.encode("utf-8"))  # 10**5 brackets: a ValueError naming the file, not a RecursionError
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{origin}: not valid JSON ({error})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{origin}: not a tokenizer.json (no 'model' object)")
    if not t5 or model.get("type") != "Unigram":
        try:
            with held_panic_output():
                return Tokenizer.from_str(text)
        except BaseException as error:  # plain Exceptions, and a pyo3 PanicException (a BaseException)
            if not library_failure(error):
                raise
            raise ValueError(f"{origin}: not a tokenizer the tokenizers library can read "
                             f"({describe_failure(error)})") from None
    vocab = model.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                              and isinstance(v[1], (int, float)) for v in vocab):
        raise ValueError(f"{origin}: the Unigram model's 'vocab' is not a list of [piece, score] pairs")
    charsmap = _precompiled_charsmap(data.get("normalizer"))
    added = _added_tokens(data.get("added_tokens"), origin)
    added.sort(key=lambda t: t.get("id", 0))
    unk_id = model.get("unk_id")
    if not is_int(unk_id, 0, len(vocab) - 1):
        raise ValueError(f"{origin}: the Unigram model's unk_id {unk_id!r} is not an id of its vocabulary")
    try:
        return t5_pipeline([(p, float(s)) for p, s in vocab], unk_id, charsmap, added, specials["eos_token"])
    except ValueError as error:
        raise ValueError(f"{origin}: {error}") from None
    except BaseException as error:  # the library's own (Exception or pyo3 PanicException)
        if not library_failure(error):
            raise
        raise ValueError(f"{origin}: not a tokenizer the tokenizers library can read "
                         f"({describe_failure(error)})") from None


def _added_tokens(entries: Any, origin: str) -> list[dict[str, Any]]:
    """A tokenizer.json's ``added_tokens``: the entries with a string ``content``, each ``id`` (when
    given) a non-negative int -- a string id would otherwise end in a bare "'<' not supported"."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{origin}: 'added_tokens' must be a list of token objects, got {type(entries).__name__}")
    added = []
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str)):
            continue
        if "id" in entry and not is_int(entry["id"], 0):
            raise ValueError(f"{origin}: added_tokens[{index}] ({entry['content']!r}) has 'id' "
                             f"{short_repr(entry['id'])}; an id is a non-negative integer")
        added.append(entry)
    return added


# Set by the command line (mt5fn.cli.main): a Rust panic's own lines ("thread ... panicked at ...") go to
# file descriptor 2 before Python sees the PanicException; there they would break the one-line rule.
HOLD_PANIC_OUTPUT = False


def hold_panic_output(on: bool = True) -> None:
    """Hold back (``on``) or let through what ``tokenizers`` writes to file descriptor 2 during its calls
    (see ``held_panic_output``); the command line turns it on."""
    global HOLD_PANIC_OUTPUT
    HOLD_PANIC_OUTPUT = bool(on)


@contextlib.contextmanager
def held_panic_output() -> Iterator[None]:
    """With ``HOLD_PANIC_OUTPUT``, what the library writes to file descriptor 2 during the block is held
    back: replayed when the block ends normally, dropped when it raises (the error says it in one line)."""
    if not HOLD_PANIC_OUTPUT:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                os.dup2(saved, 2)
                if not failed:
                    held.seek(0)
                    kept = held.read()
                    if kept:
                        os.write(2, kept)
    finally:
        os.close(saved)


def library_failure(error: BaseException) -> bool:
    """An error the ``tokenizers`` library raised: any ``Exception``, or a Rust panic surfacing as pyo3's
    ``PanicException`` (a ``BaseException``); never an interrupt or an exit."""
    return not isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit))


def describe_failure(error: BaseException) -> str:
    """``Type: first line of the message`` (a panic's message can span lines)."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": ")


def _precompiled_charsmap(normalizer: Any) -> bytes | None:
    """The SentencePiece charsmap inside a tokenizer.json normaliser (alone or in a Sequence)."""
    if not isinstance(normalizer, dict):
        return None
    parts = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "Precompiled" and part.get("precompiled_charsmap"):
            return base64.b64decode(part["precompiled_charsmap"])
    return None
