"""Which tokenizer a folder holds, and the settings its ``tokenizer_config.json`` gives.

transformers' ``AutoTokenizer`` reads, in this order: a ByT5 tokenizer when
``tokenizer_config.json`` (or ``config.json``) names ``ByT5Tokenizer`` (it
needs no file), ``tokenizer.json``, then ``spiece.model``. mt5fn reads the
same folder the same way. Every file is read through the checkpoint's
closed-world check (no link out of the folder), and the number of extra ids
is bounded before anything is built from it.
"""

from __future__ import annotations

import os
from typing import Any

from ..checks import check_int, is_int, read_json
from ..checkpoint import checked_path
from ..checkpoint._folder_names import (ADDED_TOKENS_NAME, SPECIAL_TOKENS_MAP_NAME, SPIECE_NAME,  # noqa: F401
                                       TOKENIZER_CONFIG_NAME, TOKENIZER_FILES, TOKENIZER_JSON_NAME)

# More sentinels than any T5-family tokenizer has (T5/mT5: 100, ByT5: 125, UMT5: 300), and few enough to
# build instantly; a model's vocabulary bounds them further where a config.json gives it.
MAX_EXTRA_IDS = 10_000
BYT5_CLASS = "ByT5Tokenizer"


def read_optional_json(directory: str, name: str) -> dict[str, Any]:
    file = checked_path(directory, name)
    return read_json(file) if os.path.isfile(file) else {}


def model_vocab_size(directory: str) -> int | None:
    """``vocab_size`` of the model whose folder this is (``config.json``), when it says."""
    value = read_optional_json(directory, "config.json").get("vocab_size")
    return value if is_int(value, 1) else None


def check_extra_ids(value: Any, origin: str, vocab_size: int | None = None) -> int:
    """A non-negative int, at most ``MAX_EXTRA_IDS`` and at most the model's vocabulary."""
    check_int(f"{origin}: extra_ids", value, 0, words="a non-negative int")
    limit = MAX_EXTRA_IDS if vocab_size is None else min(MAX_EXTRA_IDS, vocab_size)
    if value > limit:
        why = (f"the model's vocabulary has {vocab_size} rows" if vocab_size is not None and vocab_size < MAX_EXTRA_IDS
               else f"T5-family tokenizers use at most a few hundred (limit {MAX_EXTRA_IDS})")
        raise ValueError(f"{origin}: extra_ids={value} is too many sentinels: {why}")
    return value


def special_tokens(config: dict[str, Any]) -> dict[str, str]:
    """``pad_token`` / ``eos_token`` / ``unk_token`` strings (a str or transformers' AddedToken dict)."""
    out = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    for key in out:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            out[key] = value
    return out


def tokenizer_class(directory: str) -> str | None:
    config = read_optional_json(directory, TOKENIZER_CONFIG_NAME)
    name = config.get("tokenizer_class") or read_optional_json(directory, "config.json").get("tokenizer_class")
    return name if isinstance(name, str) else None


def find_tokenizer(directory: str) -> str:
    """``"byt5"``, ``"tokenizer.json"`` or ``"spiece.model"``: the form ``AutoTokenizer`` would read."""
    if tokenizer_class(directory) == BYT5_CLASS:
        return "byt5"
    for name in (TOKENIZER_JSON_NAME, SPIECE_NAME):
        if os.path.isfile(checked_path(directory, name)):
            return name
    raise FileNotFoundError(
        f"{directory}: no tokenizer found; looked for {TOKENIZER_JSON_NAME}, {SPIECE_NAME}, and a "
        f"{TOKENIZER_CONFIG_NAME} (or config.json) naming tokenizer_class {BYT5_CLASS!r} (ByT5 needs no file)")


def has_tokenizer(path: str | os.PathLike) -> bool:
    """Whether ``Tokenizer.from_pretrained(path)`` finds a tokenizer there (without building it):
    a ``spiece.model`` file, or a folder with ``tokenizer.json``, ``spiece.model`` or a ByT5 config."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return True
    if not os.path.isdir(path):
        return False
    try:
        find_tokenizer(path)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True
