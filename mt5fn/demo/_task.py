"""The demo's data: (language, number) pairs as text-to-text examples, split by a seed.

Input ``"fr: quatre-vingt-dix-sept"``, target ``"097"``: always three digits,
zero-padded. With a fixed output length the decoder knows which digit it is
writing from its position alone; with plain ``"97"`` / ``"666"`` it has to
count the identical digit tokens it already wrote, which a small model
trained for two minutes gets wrong (``666`` -> ``6666666``, ``211`` -> ``21``;
77.5% held-out exact match against ~96% with three digits).

All 4 x 1000 pairs exist; a seeded shuffle holds out ``test_fraction`` of
them. A held-out pair never appears in training, so answering it means
reading that language's number grammar (the same number usually appears in
training in another language, so the digits themselves are familiar).
"""

from __future__ import annotations

import os
import random

from ._numbers import LANGUAGES, MAX_NUMBER, spell


def target(n: int) -> str:
    """The answer for ``n``: its three-digit, zero-padded decimal form (``7`` -> ``"007"``)."""
    return f"{n:03d}"


def make_pairs(seed: int = 0, test_fraction: float = 0.1) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(train, test)`` lists of ``(input, target)`` strings."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    pairs = [(f"{language}: {spell(n, language)}", target(n)) for language in LANGUAGES for n in range(MAX_NUMBER + 1)]
    random.Random(seed).shuffle(pairs)
    cut = round(len(pairs) * test_fraction)
    return pairs[cut:], pairs[:cut]


def write_tsv(pairs: list[tuple[str, str]], path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for source, target in pairs:
            handle.write(f"{source}\t{target}\n")
    return path
