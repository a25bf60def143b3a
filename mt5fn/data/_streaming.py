"""Streaming examples from sharded files larger than memory, with a position that resumes exactly.

``ExampleStream`` reads its files lazily (``_readers``' sources: byte offsets
for text / TSV / JSON lines, ``datasets.IterableDataset.state_dict()`` for
parquet and ``datasets`` folders), tokenizes a few records at a time and hands
out examples in order. Each epoch visits the shards in a fresh order seeded by
``(seed, epoch)``; records keep their order within a shard (pre-shuffled
shards, as large corpora usually are, give a shuffled stream).

``state()`` is everything needed to continue: epoch, shard, position inside
it, the tokens or packed rows already read but not yet handed out, and the
counters; ``restore(state)`` continues from there, so a resumed run reads the
very examples an uninterrupted one would have. Span-corruption noise of the
k-th chunk is seeded by ``(seed, k)``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import Tensor

from ..checks import check_int
from ._examples import (DataSummary, Examples, corrupt, encode_pairs, encode_texts, mix_seed, span_lengths,
                        strip_eos)
from ._packing import pack_pairs
from ._readers import Bad, DataError, Fields, Records, expand_paths, open_source

READ_AHEAD = 64  # records tokenized together


class ExampleStream:
    """Examples of ``paths`` in order, lazily, with ``state()`` / ``restore()`` (see the module doc)."""

    def __init__(self, paths: Sequence[str], fields: Fields, tokenizer, *, max_input_length: int,
                 max_target_length: int, seed: int, prefix: str = "", pack_examples: bool = False,
                 strict: bool = False, shuffle_buffer: int = 0, flag: str = "--data") -> None:
        self.files = expand_paths(paths, flag)
        self.fields, self.tokenizer, self.flag = fields, tokenizer, flag
        self.max_input_length, self.max_target_length = max_input_length, max_target_length
        self.seed, self.prefix, self.pack_examples, self.strict = seed, prefix, pack_examples, strict
        self.mode = fields.mode
        self.shuffle_buffer = check_int("--shuffle-buffer", shuffle_buffer, 0, words="a non-negative int",
                                        error=DataError)
        self.eos_id = int(tokenizer.eos_token_id)
        self.spec = Examples(self.mode, [], int(tokenizer.vocab_size), self.eos_id, seed,
                             getattr(tokenizer, "extra_ids", None))
        if self.mode == "span":
            if prefix:
                raise DataError("--prefix applies to supervised inputs; span mode corrupts raw text (drop --prefix)")
            self.raw_length, _ = span_lengths(max_input_length, max_target_length, self.spec.extra_ids)
        self.skips = Records([], self.files)
        self._sources: dict[str, Any] = {}
        self.restore(None)

    # ------------------------------------------------------------ position
    def state(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "shard": self._shard, "position": self._position,
                "pending_tokens": self._pending_tokens.clone(), "ready": [list(pair) for pair in self._ready],
                "buffer": [list(pair) for pair in self._buffer],
                "partial": [list(pair) for pair in self._partial], "chunks": self._chunks,
                "examples_seen": self.examples_seen, "skipped": dict(self.skips.skipped),
                "files": list(self.files)}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self._epoch, self._shard, self._position = 0, 0, None
            self._pending_tokens = torch.empty(0, dtype=torch.long)
            self._ready: list[tuple[Tensor, Tensor]] = []
            self._buffer: list[tuple[Tensor, Tensor]] = []
            self._partial: list[tuple[Tensor, Tensor]] = []
            self._chunks = self.examples_seen = 0
            return
        if list(state.get("files", [])) != list(self.files):
            raise DataError(f"{self.flag}: the streamed files differ from the checkpoint's ({len(state.get('files', []))} "
                            f"then, {len(self.files)} now); give the same --data to resume")
        self._epoch, self._shard, self._position = int(state["epoch"]), int(state["shard"]), state["position"]
        self._pending_tokens = state["pending_tokens"].to(torch.long)
        self._ready = [tuple(pair) for pair in state["ready"]]
        self._buffer = [tuple(pair) for pair in state.get("buffer", [])]
        self._partial = [tuple(pair) for pair in state["partial"]]
        self._chunks, self.examples_seen = int(state["chunks"]), int(state["examples_seen"])
        self.skips.skipped.update(state.get("skipped", {}))

    # ------------------------------------------------------------ reading
    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5A4D))
        return torch.randperm(len(self.files), generator=generator).tolist()

    def _source(self, path: str):
        if path not in self._sources:
            self._sources[path] = open_source(path, self.fields)
        return self._sources[path]

    def _read(self, count: int) -> list:
        """Up to ``count`` records from the cursor on, advancing it (wraps into the next epoch)."""
        out: list = []
        barren = 0  # shards read in a row without a usable record
        while len(out) < count:
            order = self._order(self._epoch)
            if self._shard >= len(order):
                self._epoch, self._shard, self._position = self._epoch + 1, 0, None
                continue
            path = self.files[order[self._shard]]
            got = 0
            for record, position in self._source(path).rows(self._position):
                self._position = position
                if isinstance(record, Bad):
                    if self.strict:
                        raise DataError(f"{self.flag}: {record.where}: {record.reason} (--strict)")
                    self.skips.note(record)
                    continue
                out.append(record)
                got += 1
                if len(out) == count:
                    break
            else:
                self._shard, self._position = self._shard + 1, None
            barren = 0 if got else barren + 1
            if barren > len(self.files):
                raise DataError(f"{self.flag}: the files {self.files} hold no usable record "
                                f"({self.skips.skip_summary() or 'all blank'})")
        return out

    def _refill(self) -> None:
        records = self._read(READ_AHEAD)
        if self.mode == "span":
            ids = [torch.tensor(strip_eos(row, self.eos_id), dtype=torch.long)
                   for row in encode_texts(self.tokenizer, records)]
            self._pending_tokens = torch.cat([self._pending_tokens, *ids])
            usable = len(self._pending_tokens) // self.raw_length * self.raw_length
            for chunk in self._pending_tokens[:usable].view(-1, self.raw_length):
                self._ready.append((chunk.clone(), torch.empty(0, dtype=torch.long)))  # corrupted when taken
            self._pending_tokens = self._pending_tokens[usable:].clone()
            return
        pairs = encode_pairs(self.tokenizer, records, self.max_input_length, self.max_target_length, self.prefix,
                             DataSummary("supervised"))
        if not self.pack_examples:
            self._ready.extend(pairs)
            return
        rows = pack_pairs(self._partial + pairs, self.max_input_length, self.max_target_length)
        # the last row may still take more pairs: keep its parts open until the next read
        last_parts = _last_row_parts(self._partial + pairs, self.max_input_length, self.max_target_length)
        self._ready.extend(rows[:-1])
        self._partial = last_parts

    def _check_buffer_fits(self, passes: int, made: int) -> None:
        """Refuse a shuffle buffer larger than one pass over the data, once the fill proves it: ``passes``
        whole passes that made ``made`` examples (so at most ``made / passes`` a pass, one more in span mode
        for the tokens carried across) while the buffer is still not full. Without this, ``--shuffle-buffer
        10**6`` over 8 records went round the files 10**5 times before the first step (and so does any
        buffer beyond the data: it would hold the same records several times)."""
        if self.shuffle_buffer and passes >= 1 and self.shuffle_buffer * passes > made + passes:
            per_pass = (made + passes) // passes
            raise DataError(f"--shuffle-buffer {self.shuffle_buffer}: the data gives at most {per_pass} examples "
                            f"per pass over {self.flag} ({passes} whole pass(es) made {made}), fewer than the "
                            f"buffer holds; a buffer larger than the data only repeats records -- give "
                            f"--shuffle-buffer {per_pass} or less (or 0)")

    def take(self, count: int) -> list[tuple[Tensor, Tensor]]:
        """The next ``count`` examples ``(inputs, targets)``.

        With a shuffle buffer of ``B`` examples, each one handed out is drawn uniformly from the
        buffer (seeded by ``(seed, examples handed out so far)``) and its place refilled from the
        stream, as ``tf.data`` / ``datasets`` shuffle buffers do; the buffer is part of ``state()``.
        """
        start_epoch, start_ready = self._epoch, len(self._ready)
        while len(self._ready) < count + max(0, self.shuffle_buffer - len(self._buffer)):
            self._refill()
            self._check_buffer_fits(self._epoch - start_epoch - 1, len(self._ready) - start_ready)
        if self.shuffle_buffer:
            taken = []
            for index in range(count):
                room = self.shuffle_buffer - len(self._buffer)
                if room > 0:  # top the buffer up from the stream
                    self._buffer.extend(self._ready[:room])
                    self._ready = self._ready[room:]
                generator = torch.Generator().manual_seed(mix_seed(self.seed, self.examples_seen + index, 0x5B))
                pick = int(torch.randint(len(self._buffer), (1,), generator=generator))
                taken.append(self._buffer[pick])
                self._buffer[pick] = self._buffer[-1]
                self._buffer.pop()
        else:
            taken, self._ready = self._ready[:count], self._ready[count:]
        self.examples_seen += count
        if self.mode == "span":
            out = []
            for chunk, _ in taken:
                out.append(corrupt(chunk, self.spec, mix_seed(self.seed, self._chunks, 0x5CA1)))
                self._chunks += 1
            return out
        return taken

    # ------------------------------------------------------------ summary
    def summarize(self, records: int = 1000) -> DataSummary:
        """The data summary of the first ``records`` records (a fresh read; the cursor is not moved)."""
        rows: list = []
        for shard in self._order(0):
            for record, _ in open_source(self.files[shard], self.fields).rows():
                if not isinstance(record, Bad):
                    rows.append(record)
                if len(rows) >= records:
                    break
            if len(rows) >= records:
                break
        summary = DataSummary(self.mode, sample=f"the first {len(rows):,} records of the stream")
        if self.mode == "span":
            ids = [strip_eos(row, self.eos_id) for row in encode_texts(self.tokenizer, rows)]
            summary.records, summary.input_tokens = len(rows), sum(map(len, ids))
            summary.examples = summary.input_tokens // self.raw_length
            summary.dropped_tokens = summary.input_tokens - summary.examples * self.raw_length
            return summary
        pairs = encode_pairs(self.tokenizer, rows, self.max_input_length, self.max_target_length, self.prefix,
                             summary)
        summary.examples = len(pack_pairs(pairs, self.max_input_length, self.max_target_length)
                               if self.pack_examples else pairs)
        return summary


def _last_row_parts(pairs: list[tuple[Tensor, Tensor]], max_input: int, max_target: int) -> list:
    """The pairs that ``pack_pairs(pairs)`` puts into its last row."""
    parts: list = []
    inputs = targets = 0
    for pair in pairs:
        if parts and (inputs + len(pair[0]) > max_input or targets + len(pair[1]) > max_target):
            parts, inputs, targets = [], 0, 0
        parts.append(pair)
        inputs, targets = inputs + len(pair[0]), targets + len(pair[1])
    return parts


def stream_fingerprint(paths: Sequence[str]) -> str:
    """Names and sizes of the streamed files (hashing a corpus larger than memory is not affordable)."""
    parts = []
    for path in paths:
        if os.path.isdir(path):
            size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
                       for name in names)
        else:
            size = os.path.getsize(path)
        parts.append(f"{os.path.abspath(path)}:{size}")
    return "stream:" + "|".join(parts)
