"""The one JSON reader: a JSON object from a file, with errors that name the file."""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(file: str | os.PathLike, *, missing: str | None = None) -> dict[str, Any]:
    """The JSON object in ``file``. ``missing``: what to add to the error when the file does not exist."""
    file = os.fspath(file)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: missing" + (f"; {missing}" if missing else ""))
    try:
        with open(file, "rb") as handle:
            value = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    except OSError as error:
        raise OSError(f"{file}: cannot be read ({error.strerror or error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file}: does not hold a JSON object")
    return value
