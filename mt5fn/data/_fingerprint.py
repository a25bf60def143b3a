"""A digest of the training data, so a resumed run can refuse data that changed."""

from __future__ import annotations

import hashlib
import os
from typing import Sequence


def _files_of(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    return sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)


def data_fingerprint(paths: Sequence[str]) -> str:
    """SHA-256 over the bytes of ``paths`` (files, or every file of a ``datasets`` folder)."""
    digest = hashlib.sha256()
    for path in paths:
        for file in _files_of(path):
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()
