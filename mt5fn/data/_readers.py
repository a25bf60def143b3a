"""Reading training records from files: text, TSV, JSON lines / JSON, parquet and ``datasets`` folders.

A *record* is what one example is made of: a ``str`` in span mode (raw text
for span corruption) or an ``(input, target)`` pair of strings in supervised
mode. Each format is a *source* that yields rows lazily, one at a time, with
the position after each row, so the same code serves reading a corpus whole
(``read_records``) and streaming one larger than memory (``_streaming``):

* ``.txt`` (and any other extension): one example per line; supervised lines
  are ``input<TAB>target``.
* ``.tsv``: tab-separated columns. A header line is taken when
  ``tsv_header=True``, refused when ``False``, and detected when ``None``: the
  first line is a header when its fields name the configured columns
  (``input_field`` / ``target_field`` / ``text_field``) or are all common
  column names (``input``, ``target``, ``source``, ``src``, ``tgt``, ...).
  With a header, columns are chosen by name; without one, supervised reads
  the first two columns.
* ``.jsonl``: one JSON object per line; ``.json``: a JSON array of objects
  (or JSON lines). Fields are chosen by name.
* ``.parquet`` files and ``datasets.save_to_disk`` folders, through the
  ``datasets`` library (``pip install 'mt5fn[data]'``); rows are dicts as in
  JSON. A folder holding a ``DatasetDict`` gives its ``split`` (``train`` for
  training data, ``validation`` / ``test`` for evaluation).

Text is UTF-8: a byte order mark is stripped in every format (a TSV header
behind one is still detected); a UTF-16 or UTF-32 file (told by its BOM) is
refused in one error naming the file and the encoding; a NUL byte in a line is
refused naming ``file:line`` (it means binary data or a wide encoding without
a BOM, never text worth training on).

Blank lines are skipped silently. Malformed rows (bad JSON, a missing or
non-text field, an empty input or target, a line without a TAB) are
*counted*: skipped with a summary, or fatal with ``strict``. Never silent.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..checks import check_depth, utf8_body

# Column names that, when a TSV's first line consists only of them, mark it as a header.
_HEADER_WORDS = frozenset({
    "input", "inputs", "target", "targets", "source", "sources", "src", "tgt", "output", "outputs", "text",
    "label", "labels", "prompt", "completion", "question", "answer", "sentence", "sentence1", "sentence2",
    "translation", "id", "idx"})
ARROW_EXTENSIONS = (".parquet",)
EXAMPLES_OF_SKIPS = 5


class DataError(ValueError):
    """Bad training data or batch geometry, with a message naming the file / option."""


@dataclass(frozen=True)
class Fields:
    """Which columns / fields make a record, and how to treat a TSV's first line."""

    mode: str = "span"  # "span" (text) or "supervised" (input, target)
    input_field: str = "input"
    target_field: str = "target"
    text_field: str = "text"
    tsv_header: bool | None = None  # None: detect

    def __post_init__(self) -> None:
        if self.mode not in ("span", "supervised"):
            raise DataError(f"mode must be 'span' or 'supervised', got {self.mode!r}")
        for name in ("input_field", "target_field", "text_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise DataError(f"{name} must be a non-empty string, got {value!r}")
        if self.tsv_header not in (None, True, False):
            raise DataError(f"tsv_header must be True, False or None (detect), got {self.tsv_header!r}")


class Reason(str):
    """Why a row is malformed (a ``str``, told apart from a span-mode record by its type)."""


@dataclass(frozen=True)
class Bad:
    """A malformed row: where it is and why it cannot be used."""

    where: str
    reason: str


@dataclass
class Records:
    """Records read from files, and the malformed rows that were skipped."""

    items: list
    files: list[str]
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skip_examples: list[str] = field(default_factory=list)  # "file:line: reason", the first few

    def note(self, bad: Bad) -> None:
        self.skipped[bad.reason.split(" (")[0]] += 1
        if len(self.skip_examples) < EXAMPLES_OF_SKIPS:
            self.skip_examples.append(f"{bad.where}: {bad.reason}")

    def skip_summary(self) -> str | None:
        """One line on what was skipped, or None when nothing was."""
        total = sum(self.skipped.values())
        if not total:
            return None
        kinds = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        return (f"skipped {total} malformed record(s) of {total + len(self.items)} ({kinds}); first: "
                f"{self.skip_examples[0]} (pass --strict to stop at the first one instead)")


# ---------------------------------------------------------------- paths
def expand_paths(patterns: Sequence[str], flag: str = "--data") -> list[str]:
    """Files (and ``datasets`` folders) named by ``patterns``: paths or globs, in the given order,
    each glob sorted; a pattern that matches nothing is an error naming it."""
    if isinstance(patterns, str) or not patterns:
        raise DataError(f"{flag}: give at least one file, folder or glob")
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise DataError(f"{flag}: expected a path or glob, got {pattern!r}")
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise DataError(f"{flag}: the glob {pattern!r} matches no file")
        else:
            if not os.path.exists(pattern):
                raise DataError(f"{flag}: no such file {pattern!r}")
            matches = [pattern]
        for path in matches:
            if os.path.isdir(path) and not is_dataset_folder(path):
                raise DataError(f"{flag}: {path!r} is a folder but not a datasets.save_to_disk folder "
                                "(no dataset_info.json / state.json / dataset_dict.json); give files or a glob")
            if path not in out:
                out.append(path)
    return out


def is_dataset_folder(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name)) for name in
                                       ("dataset_dict.json", "state.json", "dataset_info.json"))


def kind_of(path: str) -> str:
    """``text``, ``tsv``, ``jsonl``, ``json`` or ``arrow`` (parquet / datasets folder)."""
    if is_dataset_folder(path):
        return "arrow"
    lower = path.lower()
    for ext, kind in ((".tsv", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json")):
        if lower.endswith(ext):
            return kind
    if lower.endswith(ARROW_EXTENSIONS):
        return "arrow"
    return "text"


def require_datasets(path: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"--data {path!r}: parquet files and datasets folders are read with the `datasets` "
                        "library, which is not installed: pip install 'mt5fn[data]'") from None
    return datasets


# ---------------------------------------------------------------- record extraction
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def record_from_row(row: dict, fields: Fields) -> Any:
    """A record from a dict row (JSON object, dataset row), or a reason string when malformed."""
    names = (fields.text_field,) if fields.mode == "span" else (fields.input_field, fields.target_field)
    values = []
    for name in names:
        if name not in row:
            return Reason(f"missing field {name!r} (fields: {sorted(map(str, row))[:8]})")
        text = _text(row[name])
        if text is None:
            return Reason(f"field {name!r} is not a string (got {type(row[name]).__name__})")
        values.append(text)
    return _checked(values, fields)


def _checked(values: list[str], fields: Fields) -> Any:
    if fields.mode == "span":
        return values[0] if values[0].strip() else Reason("empty text")
    source, target = values
    if not source.strip():
        return Reason("empty input")
    if not target.strip():
        return Reason("empty target")
    return (source, target)


class _Header:
    """Column choice of a TSV file: from its header line, or positional."""

    def __init__(self, names: list[str] | None) -> None:
        self.names = names

    def record(self, columns: list[str], fields: Fields) -> Any:
        if self.names is None:
            if fields.mode == "span":
                return _checked(["\t".join(columns)], fields)
            if len(columns) < 2:
                return Reason("no TAB separating input and target")
            return _checked(columns[:2], fields)
        if len(columns) != len(self.names):
            return Reason(f"{len(columns)} columns but the header has {len(self.names)}")
        return record_from_row(dict(zip(self.names, columns)), fields)


def detect_header(first_line: str, fields: Fields) -> list[str] | None:
    """The header's column names when ``first_line`` is one (see the module docstring), else None."""
    names = first_line.rstrip("\r\n").split("\t")
    if fields.tsv_header is False:
        return None
    if fields.tsv_header is True:
        return names
    configured = {fields.text_field} if fields.mode == "span" else {fields.input_field, fields.target_field}
    lowered = {name.strip().lower() for name in names}
    if configured <= set(names) or (lowered and lowered <= _HEADER_WORDS):
        return names
    return None


def choose_header(names: list[str] | None, fields: Fields, path: str) -> _Header:
    if names is None:
        return _Header(None)
    wanted = [fields.text_field] if fields.mode == "span" else [fields.input_field, fields.target_field]
    if all(name in names for name in wanted):
        return _Header(names)
    if fields.mode == "supervised" and len(names) >= 2:  # a header with other names: the first two columns
        return _Header(None)
    if fields.mode == "span":
        return _Header(None)
    raise DataError(f"--data {path!r}: the header {names} has no columns {wanted} (--input-field / "
                    "--target-field)")


# ---------------------------------------------------------------- sources
class LineSource:
    """A text / TSV / JSON-lines file read line by line; positions are byte offsets."""

    def __init__(self, path: str, kind: str, fields: Fields) -> None:
        self.path, self.kind, self.fields = path, kind, fields
        self._header: _Header | None = None
        with open(path, "rb") as handle:
            head = handle.read(4)
        try:
            bom = len(head) - len(utf8_body(path, head))  # a UTF-8 BOM is skipped, UTF-16 / 32 refused
        except ValueError as error:
            raise DataError(f"--data {error}") from None
        self._bom = self._body_start = bom
        if kind == "tsv":
            with open(path, "rb") as handle:
                handle.seek(bom)
                first = handle.readline()
            text = self._decode(first) if first else None
            names = detect_header(text, fields) if text else None
            self._header = choose_header(names, fields, path)
            self._body_start = bom + len(first) if names is not None else bom

    @staticmethod
    def _decode(raw: bytes) -> str | None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def rows(self, start: int | None = None) -> Iterator[tuple[Any, int]]:
        """``(record | Bad, byte offset after the line)`` from byte ``start`` (default: the first row)."""
        offset = self._body_start if start is None else max(int(start), self._bom)
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            number = None  # line numbers are only known when reading from the top
            if start is None:
                number = 2 if self._body_start else 1
            for raw in iter(handle.readline, b""):
                offset += len(raw)
                where = f"{self.path}:{number}" if number is not None else f"{self.path} at byte {offset - len(raw)}"
                if number is not None:
                    number += 1
                if b"\x00" in raw:
                    raise DataError(f"--data {where}: a NUL byte in the text (binary data, or UTF-16 / UTF-32 "
                                    "without a byte order mark); give UTF-8 text")
                line = self._decode(raw)
                if line is None:
                    yield Bad(where, "not UTF-8 text"), offset
                    continue
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                record = self._record(line)
                yield (Bad(where, record) if isinstance(record, Reason) else record), offset

    def _record(self, line: str) -> Any:
        fields = self.fields
        if self.kind == "jsonl" or self.kind == "json":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                return Reason(f"bad JSON ({error.msg})")
            except RecursionError:
                return Reason("bad JSON (nested too deeply)")
            if not isinstance(row, dict):
                return Reason(f"not a JSON object (got {type(row).__name__})")
            return record_from_row(row, fields)
        if self.kind == "tsv":
            assert self._header is not None
            return self._header.record(line.split("\t"), fields)
        if fields.mode == "span":
            return line
        source, tab, target = line.partition("\t")
        if not tab:
            return Reason("no TAB separating input and target")
        return _checked([source, target], fields)


class JsonArraySource:
    """A ``.json`` file holding one array of objects (read whole: JSON arrays cannot be streamed)."""

    def __init__(self, path: str, rows: list, fields: Fields) -> None:
        self.path, self._rows, self.fields = path, rows, fields

    def rows(self, start: int | None = None) -> Iterator[tuple[Any, int]]:
        for index in range(int(start or 0), len(self._rows)):
            row = self._rows[index]
            where = f"{self.path}[{index}]"
            record = (record_from_row(row, self.fields) if isinstance(row, dict)
                      else Reason(f"not a JSON object (got {type(row).__name__})"))
            yield (Bad(where, record) if isinstance(record, Reason) else record), index + 1


class ArrowSource:
    """A parquet file or ``datasets.save_to_disk`` folder through ``datasets`` (lazy, resumable).

    Positions are the ``datasets.IterableDataset.state_dict()`` after each row, so
    a stream resumes at the exact row (``load_state_dict``).
    """

    def __init__(self, path: str, fields: Fields, split: str | Sequence[str]) -> None:
        self.path, self.fields = path, fields
        self._datasets = require_datasets(path)
        self._splits = (split,) if isinstance(split, str) else tuple(split)
        self._open()  # fail early on an unreadable file

    def _open(self):
        datasets = self._datasets
        try:
            if os.path.isdir(self.path):
                loaded = datasets.load_from_disk(self.path)
                if isinstance(loaded, datasets.DatasetDict):
                    names = [name for name in self._splits if name in loaded]
                    if not names and len(loaded) == 1:
                        names = list(loaded)
                    if not names:
                        raise DataError(f"--data {self.path!r} is a DatasetDict with splits {sorted(loaded)}; "
                                        f"none is {' / '.join(self._splits)}")
                    loaded = loaded[names[0]]
                return loaded.to_iterable_dataset()
            return datasets.load_dataset("parquet", data_files=self.path, split="train", streaming=True)
        except DataError:
            raise
        except Exception as error:  # arrow / parquet errors: name the file
            raise DataError(f"--data {self.path!r} cannot be read as a dataset ({type(error).__name__}: "
                            f"{error})") from None

    def rows(self, start: Any = None) -> Iterator[tuple[Any, Any]]:
        stream = self._open()
        if start is not None:
            stream.load_state_dict(start)
        index = 0
        for row in stream:
            index += 1
            record = record_from_row(row, self.fields)
            where = f"{self.path} row {index}" if start is None else f"{self.path} (resumed) row {index}"
            yield (Bad(where, record) if isinstance(record, Reason) else record), copy.deepcopy(stream.state_dict())


def open_source(path: str, fields: Fields, *, split: str | Sequence[str] = "train"):
    """The source that reads ``path`` (see the module docstring for the formats)."""
    kind = kind_of(path)
    if kind == "arrow":
        return ArrowSource(path, fields, split)
    if not os.path.isfile(path):
        raise DataError(f"--data: no such file {path!r}")
    if kind == "json":
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip()
        try:
            head = utf8_body(path, head).lstrip()
        except ValueError as error:
            raise DataError(f"--data {error}") from None
        if head.startswith(b"["):
            try:
                with open(path, "rb") as handle:
                    data = utf8_body(path, handle.read())
                check_depth(path, data)
                rows = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise DataError(f"--data {path!r} is not UTF-8 text ({error})") from None
            except json.JSONDecodeError as error:
                raise DataError(f"--data {path!r} is not valid JSON ({error})") from None
            except (ValueError, RecursionError) as error:
                raise DataError(f"--data {error}") from None
            return JsonArraySource(path, rows, fields)
    return LineSource(path, kind, fields)


def read_records(paths: Sequence[str], fields: Fields, *, strict: bool = False, flag: str = "--data",
                 split: str | Sequence[str] = "train") -> Records:
    """All records of ``paths`` (files, folders or globs) in memory; malformed rows skipped and
    counted, or a ``DataError`` at the first one when ``strict``."""
    files = expand_paths(paths, flag)
    out = Records([], files)
    for path in files:
        kept = bad = 0
        for record, _ in open_source(path, fields, split=split).rows():
            if isinstance(record, Bad):
                if strict:
                    raise DataError(f"{flag}: {record.where}: {record.reason} (--strict)")
                out.note(record)
                bad += 1
                continue
            out.items.append(record)
            kept += 1
        if kept == 0 and bad == 0:
            raise DataError(f"{flag}: {path!r} is empty (no non-blank lines / rows)")
    if not out.items:
        raise DataError(f"{flag}: no usable record in {files}: {out.skip_summary()}")
    return out
