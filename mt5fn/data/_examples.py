"""Records -> token-id examples, and a summary of what truncation did to them.

Two modes:

* ``span``: raw text for T5's span-corruption objective (Raffel et al. 2020,
  section 3.1.4). Texts are tokenized without EOS, concatenated and cut into
  chunks of the raw length that ``compute_input_and_target_lengths`` gives for
  ``max_input_length`` (T5's ``reduce_concat_tokens`` + ``split_tokens``);
  each chunk is corrupted afresh every epoch, with a generator seeded by
  ``(seed, epoch, index)``.
* ``supervised``: ``(input, target)`` pairs; ``prefix`` is prepended to each
  input (``"translate English to German: "``), each side gets EOS and is
  truncated to its maximum length (keeping EOS last); ``pack`` joins
  consecutive pairs into rows (``pack_pairs``).

Everything random is derived from ``(seed, epoch, index)`` rather than drawn
from a running generator, so the example seen at any step is a pure function
of the step number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_int
from ._packing import pack, pack_pairs
from ._readers import DataError
from ._spans import compute_input_and_target_lengths, sentinels_needed, span_corruption

WARN_SHARE = 0.01  # truncating more than this share of inputs or targets draws a warning


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes and runs, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def check_lengths(max_input_length: Any, max_target_length: Any) -> None:
    for name, value in (("--max-input-length", max_input_length), ("--max-target-length", max_target_length)):
        check_int(name, value, 2, words="an int >= 2 (room for a token and EOS)", error=DataError)


def truncate(ids: Sequence[int], length: int, eos_id: int) -> Tensor:
    """Ids ending in EOS, at most ``length`` long (EOS kept when cutting)."""
    if not ids or ids[-1] != eos_id:
        ids = list(ids) + [eos_id]
    if len(ids) > length:
        ids = list(ids[: length - 1]) + [eos_id]
    return torch.tensor(ids, dtype=torch.long)


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, ``</s>`` appended (unpadded lists)."""
    if not texts:
        return []
    return tokenizer.batch_encode(texts, padding=False, return_tensors=None)["input_ids"]


def strip_eos(ids: Sequence[int], eos_id: int) -> list[int]:
    return list(ids[:-1]) if ids and ids[-1] == eos_id else list(ids)


@dataclass
class DataSummary:
    """What the data holds once tokenized, and what the chosen lengths cut away."""

    mode: str
    records: int = 0
    examples: int = 0
    input_tokens: int = 0  # before truncation (with EOS); span mode: raw text tokens
    target_tokens: int = 0
    inputs_truncated: int = 0
    targets_truncated: int = 0
    longest_input: int = 0
    longest_target: int = 0
    dropped_tokens: int = 0  # span mode: the tail that does not fill a chunk
    sample: str = ""  # "" (all records) or a note such as "the first 1000 records"

    def add_pair(self, source_len: int, target_len: int, max_input: int, max_target: int) -> None:
        self.records += 1
        self.input_tokens += source_len
        self.target_tokens += target_len
        self.inputs_truncated += source_len > max_input
        self.targets_truncated += target_len > max_target
        self.longest_input = max(self.longest_input, source_len)
        self.longest_target = max(self.longest_target, target_len)

    def shares(self) -> tuple[float, float]:
        count = max(self.records, 1)
        return self.inputs_truncated / count, self.targets_truncated / count

    def as_dict(self) -> dict[str, Any]:
        share_in, share_out = self.shares()
        return {"mode": self.mode, "records": self.records, "examples": self.examples,
                "input_tokens": self.input_tokens, "target_tokens": self.target_tokens,
                "inputs_truncated_share": share_in, "targets_truncated_share": share_out,
                "longest_input": self.longest_input, "longest_target": self.longest_target,
                "dropped_tokens": self.dropped_tokens, "sample": self.sample}

    def report(self, max_input_length: int, max_target_length: int, what: str = "training data") -> list[str]:
        """Summary lines, then one warning per side whose truncated share is above 1%."""
        of = f" ({self.sample})" if self.sample else ""
        if self.mode == "span":
            return [f"{what}{of}: {self.records:,} texts, {self.input_tokens:,} tokens -> {self.examples:,} "
                    f"span-corruption examples of --max-input-length {max_input_length} "
                    f"({self.dropped_tokens:,} tail tokens dropped)"]
        share_in, share_out = self.shares()
        lines = [f"{what}{of}: {self.examples:,} examples from {self.records:,} records; inputs "
                 f"{self.input_tokens:,} tokens (longest {self.longest_input}), targets {self.target_tokens:,} "
                 f"tokens (longest {self.longest_target}); truncated: {share_in:.1%} of inputs at "
                 f"--max-input-length {max_input_length}, {share_out:.1%} of targets at --max-target-length "
                 f"{max_target_length}"]
        for share, side, flag, limit, longest in (
                (share_in, "inputs", "--max-input-length", max_input_length, self.longest_input),
                (share_out, "targets", "--max-target-length", max_target_length, self.longest_target)):
            if share > WARN_SHARE:
                lines.append(f"warning: {share:.1%} of the {side} in the {what} are longer than {flag} {limit} tokens "
                             f"(the longest has {longest}) and are cut; raise {flag} to keep them whole")
        return lines


@dataclass
class Examples:
    """Indexable examples; ``get(index, epoch)`` -> ``(inputs, targets)`` 1-D LongTensors."""

    mode: str
    items: list  # span: LongTensor chunks (raw length,); supervised: (inputs, targets) tensors
    vocab_size: int
    eos_id: int
    seed: int
    extra_ids: int | None = None
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    summary: DataSummary = field(default_factory=lambda: DataSummary("span"))

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int, epoch: int) -> tuple[Tensor, Tensor]:
        if self.mode == "supervised":
            return self.items[index]
        return corrupt(self.items[index], self, mix_seed(self.seed, epoch, index, 0x5CA1))


def corrupt(chunk: Tensor, spec: Examples, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return span_corruption(chunk, vocab_size=spec.vocab_size, eos_id=spec.eos_id, noise_density=spec.noise_density,
                           mean_noise_span_length=spec.mean_noise_span_length, generator=generator,
                           extra_ids=spec.extra_ids)


def span_lengths(max_input_length: int, max_target_length: int, extra_ids: int | None) -> tuple[int, int]:
    """``(raw chunk length, target length)`` of span corruption at ``max_input_length``, checked
    against the target length and the tokenizer's sentinels before any step runs."""
    try:
        raw_length, target_length = compute_input_and_target_lengths(max_input_length)
    except ValueError as error:
        raise DataError(f"--max-input-length {max_input_length} cannot hold a span-corrupted example: {error}") \
            from None
    if target_length > max_target_length:
        raise DataError(f"--max-input-length {max_input_length} gives span-corruption targets of "
                        f"{target_length} tokens, more than --max-target-length {max_target_length}")
    if extra_ids is not None:
        needed = sentinels_needed(raw_length)
        if needed > extra_ids:
            raise DataError(f"--max-input-length {max_input_length}: span corruption needs {needed} sentinels per "
                            f"example (one per noise span) but the tokenizer has only {extra_ids} extra ids; "
                            f"lower --max-input-length to {longest_fitting(extra_ids, max_input_length)} or use a "
                            "tokenizer with more extra ids")
    return raw_length, target_length


def longest_fitting(extra_ids: int, upper: int) -> int:
    """The largest inputs length <= ``upper`` whose span corruption needs at most ``extra_ids`` sentinels."""
    low, high = 2, upper  # invariant: low fits (2 -> 1 sentinel), high may not
    if extra_ids < 1:
        return 0
    while low < high:
        mid = (low + high + 1) // 2
        if sentinels_needed(compute_input_and_target_lengths(mid)[0]) <= extra_ids:
            low = mid
        else:
            high = mid - 1
    return low


def encode_pairs(tokenizer, records: list[tuple[str, str]], max_input_length: int, max_target_length: int,
                 prefix: str, summary: DataSummary) -> list[tuple[Tensor, Tensor]]:
    """Tokenize and truncate ``(input, target)`` records, counting what is cut into ``summary``."""
    eos_id = int(tokenizer.eos_token_id)
    sources = encode_texts(tokenizer, [prefix + source for source, _ in records])
    targets = encode_texts(tokenizer, [target for _, target in records])
    pairs = []
    for source, target in zip(sources, targets):
        summary.add_pair(len(source), len(target), max_input_length, max_target_length)
        pairs.append((truncate(source, max_input_length, eos_id), truncate(target, max_target_length, eos_id)))
    return pairs


def build_examples(records: list, tokenizer, mode: str, *, max_input_length: int, max_target_length: int,
                   seed: int, prefix: str = "", pack_examples: bool = False, extra_ids: int | None = None,
                   vocab_size: int | None = None) -> Examples:
    """Tokenize ``records`` (``read_records(...).items``) into ``Examples`` with a ``summary``.

    ``vocab_size`` is the tokenizer size including the extra ids (the span
    sentinels are its top ids); it defaults to ``tokenizer.vocab_size``, and
    ``extra_ids`` to ``tokenizer.extra_ids``.
    """
    check_lengths(max_input_length, max_target_length)
    vocab_size = int(tokenizer.vocab_size if vocab_size is None else vocab_size)
    extra_ids = getattr(tokenizer, "extra_ids", None) if extra_ids is None else extra_ids
    eos_id = int(tokenizer.eos_token_id)
    summary = DataSummary(mode)
    if mode == "supervised":
        pairs = encode_pairs(tokenizer, records, max_input_length, max_target_length, prefix, summary)
        if pack_examples:
            pairs = pack_pairs(pairs, max_input_length, max_target_length)
        summary.examples = len(pairs)
        return Examples(mode, pairs, vocab_size, eos_id, seed, extra_ids, summary=summary)
    if prefix:
        raise DataError("--prefix applies to supervised inputs; span mode corrupts raw text (drop --prefix)")
    raw_length, _ = span_lengths(max_input_length, max_target_length, extra_ids)
    documents = [torch.tensor(strip_eos(ids, eos_id), dtype=torch.long) for ids in encode_texts(tokenizer, records)]
    chunks = pack(documents, raw_length)  # (N, raw_length)
    total = sum(len(doc) for doc in documents)
    summary.records, summary.input_tokens, summary.examples = len(records), total, len(chunks)
    summary.dropped_tokens = total - len(chunks) * raw_length
    if len(chunks) == 0:
        raise DataError(f"--data holds {total} tokens, fewer than one span-corruption example of "
                        f"{raw_length} raw tokens (--max-input-length {max_input_length}); "
                        "give more text or a smaller --max-input-length")
    return Examples(mode, list(chunks), vocab_size, eos_id, seed, extra_ids, summary=summary)
