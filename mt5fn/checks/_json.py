"""The one JSON reader: a JSON object from a file, with errors that name the file.

Text is UTF-8, with or without a byte order mark (``text_encoding``: UTF-16 and
UTF-32 files are refused naming the encoding). Nesting is bounded,
``MAX_DEPTH`` levels: a config, tokenizer or trainer state is a few levels
deep, and a file of 10**5 brackets would otherwise end in a ``RecursionError``
that names no file.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF8, "UTF-8"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def text_encoding(head: bytes) -> tuple[str, int]:
    """``(encoding, BOM length)`` from a file's first bytes: ``("UTF-8", 3)`` after a UTF-8 BOM,
    ``("UTF-16", 2)`` / ``("UTF-32", 4)`` after theirs, else ``("UTF-8", 0)``. UTF-32-LE's BOM starts
    like UTF-16-LE's, so it is tested first."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return "UTF-8", 0


def utf8_body(file: str, data: bytes) -> bytes:
    """``data`` without a UTF-8 BOM; a UTF-16 / UTF-32 BOM is a ``ValueError`` naming file and encoding."""
    encoding, skip = text_encoding(data[:4])
    if encoding != "UTF-8":
        raise ValueError(f"{file}: not UTF-8 text: it starts with a {encoding} byte order mark ({encoding} text); "
                         f"mt5fn reads UTF-8: convert it, e.g. iconv -f {encoding} -t UTF-8")
    return data[skip:]


def check_depth(file: str, data: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (strings are skipped, so brackets in them do not count)."""
    brackets = _BRACKETS.findall(_STRINGS.sub(b"", data))
    if len(brackets) <= limit:
        return
    depth = max(accumulate(1 if b in (b"[", b"{") else -1 for b in brackets), default=0)
    if depth > limit:
        raise ValueError(f"{file}: JSON nested {depth} levels deep; more than {limit} is refused (no config, "
                         "tokenizer or state file needs it)")


def read_json(file: str | os.PathLike, *, missing: str | None = None) -> dict[str, Any]:
    """The JSON object in ``file``. ``missing``: what to add to the error when the file does not exist."""
    file = os.fspath(file)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: missing" + (f"; {missing}" if missing else ""))
    try:
        with open(file, "rb") as handle:
            data = utf8_body(file, handle.read())
        check_depth(file, data)
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{file}: JSON nested too deeply to parse") from None
    except OSError as error:
        raise OSError(f"{file}: cannot be read ({error.strerror or error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file}: does not hold a JSON object")
    return value
