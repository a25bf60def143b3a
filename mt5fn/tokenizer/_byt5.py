"""ByT5's byte-level tokenizer (Xue et al. 2022, "ByT5: Towards a token-free future"), as transformers has it.

No vocabulary file: ids 0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>``, byte ``b``
of the UTF-8 text is id ``b + 3``, and the sentinels follow from id 259. In
transformers' ``ByT5Tokenizer`` ``<extra_id_0>`` is 259 and ``<extra_id_N>``
is ``259 + N`` (the original ByT5 preprocessing counted sentinels down from
the top id; transformers' ids are what a folder's users get, so they are
followed here). Special tokens written in the text are matched first (the
longest at the leftmost position); ``<pad>``, ``</s>`` and ``<unk>`` also eat
the whitespace around them. ``</s>`` is appended unless the text already ends
with it. Decoding joins the bytes and drops invalid UTF-8, as transformers does.
"""

from __future__ import annotations

import re
from typing import Sequence

OFFSET = 3
NUM_BYTES = 256
SPECIALS = ("<pad>", "</s>", "<unk>")


class ByteBackend:
    """The ByT5 tokenizer; ``extra_ids`` sentinels (or the ``sentinels`` token strings, in id order)."""

    kind = "byt5"

    def __init__(self, extra_ids: int = 125, sentinels: Sequence[str] | None = None):
        self.sentinels = list(sentinels) if sentinels is not None else [f"<extra_id_{n}>" for n in range(extra_ids)]
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
        first = OFFSET + NUM_BYTES
        self._added = {token: first + i for i, token in enumerate(self.sentinels)}
        self._added.update({token: i for i, token in enumerate(SPECIALS)})
        self.size = first + len(self.sentinels)
        self.special_ids = frozenset(self._added.values())
        pattern = "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))
        self._split = re.compile(f"({pattern})")
        self.extra_ids = sum(1 for t in self.sentinels if re.fullmatch(r"<extra_id_\d+>", t))

    def id_to_token(self, index: int) -> str:
        if index < OFFSET:
            return SPECIALS[index]
        if index < OFFSET + NUM_BYTES:
            return chr(index - OFFSET)
        return self.sentinels[index - OFFSET - NUM_BYTES]

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        return ord(token) + OFFSET if len(token) == 1 and ord(token) < NUM_BYTES else None

    def _encode(self, text: str) -> list[int]:
        parts = self._split.split(text)  # odd positions are the special tokens
        for i in range(1, len(parts), 2):
            if parts[i] in SPECIALS:  # lstrip / rstrip tokens
                parts[i - 1] = parts[i - 1].rstrip()
                if i + 1 < len(parts):
                    parts[i + 1] = parts[i + 1].lstrip()
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self._added[part])
            elif part:
                ids.extend(b + OFFSET for b in part.encode("utf-8"))
        if not ids or ids[-1] != self.eos_id:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._encode(text) for text in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        out = bytearray()
        for index in ids:
            if index in self.special_ids:
                if not skip_special_tokens:
                    out += self.id_to_token(index).encode("utf-8")
            else:
                out.append(index - OFFSET)
        return out.decode("utf-8", errors="ignore")
