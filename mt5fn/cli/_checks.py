"""The command line's one validation layer: options every subcommand shares, checked before it runs,
and the one-line error every failure ends in.

Each subcommand turns its own options into validated configs (``GenerationConfig``,
``TrainConfig``, ...). What no config sees is checked here, for every subcommand
at once, before any model is loaded or any file written:

* ``--device`` names a device this build and machine have (``--device cuda`` on
  a CPU-only build used to end in an ``AssertionError`` from deep inside torch);
* ``--seed`` is an int torch's generators take, ``[0, 2**64 - 1]`` (else an
  ``OverflowError`` late in the run);
* every output path (``--out``, ``--profile``, ``--predictions``, ``DST``) can
  exist: no part of it is an existing file (else a ``NotADirectoryError`` after
  minutes of work), a directory output is not an existing file, a file output
  is not a device, FIFO or directory and its folder exists (the library's
  output rule, ``checkpoint._atomic.check_output_target``);
* no output is one of the run's own inputs (``INPUTS``): ``encode --out
  M/model.safetensors`` with ``--model M``, ``--out`` inside an input folder or
  matched by the ``--data`` glob (``checkpoint._atomic.check_not_an_input``).

``one_line`` turns any error message into the single stderr line a command
prints (``mt5fn CMD: error: ...``); ``OneLineParser`` makes argparse's own
usage errors one line too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

# Output options per subcommand: (attribute, flag, "dir" | "file").
OUTPUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "train": (("out", "--out", "dir"), ("profile", "--profile", "dir")),
    "demo": (("out", "--out", "dir"),),
    "convert": (("dst", "DST", "dir"),),
    "generate": (("profile", "--profile", "dir"),),
    "evaluate": (("out", "--out", "file"), ("predictions", "--predictions", "file")),
    "encode": (("out", "--out", "file"),),
}


def one_line(message: object) -> str:
    """``message`` on one line: inner newlines become ``"; "``, indentation is dropped."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    return "; ".join(parts) if parts else type(message).__name__


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, ``mt5fn CMD: error: ... (see mt5fn CMD --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def check_output_path(flag: str, path: Any, kind: str) -> None:
    """``path`` can be created or replaced: no existing ancestor is a non-directory, and a
    ``"dir"`` output is not an existing file (a ``"file"`` output is not an existing directory)."""
    if not isinstance(path, (str, os.PathLike)):
        return
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and os.path.exists(path):
        if kind == "dir" and not os.path.isdir(path):
            raise NotADirectoryError(f"{flag}: {path} exists and is a file, not a directory")
        if kind == "file" and os.path.isdir(path):
            raise IsADirectoryError(f"{flag}: {path} is a directory; give a file name")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        if os.path.lexists(parent):  # a dangling symlink
            raise NotADirectoryError(f"{flag}: {path} is under {parent}, a broken symbolic link")
        parent, previous = os.path.dirname(parent), parent
        if parent == previous:
            break
    if parent and not os.path.isdir(parent):
        raise NotADirectoryError(f"{flag}: {path} is under {parent}, which is a file, not a directory")
    if kind == "file" and not os.path.isdir(os.path.dirname(path)):
        raise FileNotFoundError(f"{flag}: the folder {os.path.dirname(path)} of {path} does not exist")
    from ..checkpoint import check_output_target

    check_output_target(path, kind, flag)


# Input options per subcommand (attributes): an output may be none of them.
INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("data", "--data"), ("eval_data", "--eval-data"), ("tokenizer", "--tokenizer"), ("config", "--config"),
              ("from_checkpoint", "--from-checkpoint")),
    "convert": (("src", "SRC"), ("config", "--config"), ("tokenizer", "--tokenizer")),
    "generate": (("model", "--model"), ("adapter", "--adapter"), ("tokenizer", "--tokenizer")),
    "evaluate": (("model", "--model"), ("adapter", "--adapter"), ("tokenizer", "--tokenizer"), ("data", "--data")),
    "encode": (("model", "--model"), ("tokenizer", "--tokenizer"), ("config", "--config")),
}


def run_inputs(command: str, args: argparse.Namespace) -> dict[str, list[str]]:
    """flag -> the paths (or globs) ``command`` reads, from its parsed ``args``."""
    out: dict[str, list[str]] = {}
    for attribute, flag in INPUTS.get(command, ()):
        value = getattr(args, attribute, None)
        values = value if isinstance(value, list) else [value]
        out[flag] = [v for v in values if isinstance(v, (str, os.PathLike))]
    return out


# Options a subcommand checks itself, in its config's terms: ``train`` all three (TrainConfig, exit
# status 2), ``evaluate`` its device.
CHECKS_OWN_OPTIONS: dict[str, frozenset[str]] = {"train": frozenset({"device", "seed", "outputs"}),
                                                 "evaluate": frozenset({"device"})}


def check_common(command: str, args: argparse.Namespace) -> None:
    """The shared options of ``command``'s parsed ``args`` (see the module docstring)."""
    from ..model import check_device, check_seed

    own = CHECKS_OWN_OPTIONS.get(command, frozenset())
    device = getattr(args, "device", None)
    if isinstance(device, str) and device != "auto" and "device" not in own:
        check_device("--device", device)
    seed = getattr(args, "seed", None)
    if seed is not None and "seed" not in own:
        check_seed("--seed", seed)
    if "outputs" not in own:
        for attribute, flag, kind in OUTPUTS.get(command, ()):
            check_output_path(flag, getattr(args, attribute, None), kind)
    from ..checkpoint import check_not_an_input

    inputs = run_inputs(command, args)
    for attribute, flag, kind in OUTPUTS.get(command, ()):
        path = getattr(args, attribute, None)
        if isinstance(path, (str, os.PathLike)):
            check_not_an_input(flag, path, kind, inputs)


def fail(command: str, error: BaseException | str) -> int:
    """Print the one error line of ``command`` and return the exit status 1."""
    print(f"mt5fn {command}: error: {one_line(error)}", file=sys.stderr)
    return 1


def stdin_lines() -> list[str]:
    """The lines of standard input as texts (line ends dropped), decoded as UTF-8 strictly.

    Binary or otherwise non-UTF-8 input is a ``ValueError`` naming stdin and where it breaks, instead
    of a ``UnicodeDecodeError`` (strict mode) or lone surrogates that reach the tokenizer (UTF-8 mode
    reads stdin with ``errors="surrogateescape"``).
    """
    stream = sys.stdin
    raw = getattr(stream, "buffer", None)
    data = raw.read() if raw is not None else stream.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise ValueError(f"stdin: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}, "
                             f"line {line}: {error.reason}); pass texts that are UTF-8") from None
    else:
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as error:
            line = data.count("\n", 0, error.start) + 1
            raise ValueError(f"stdin: not UTF-8 text (undecodable byte at character {error.start}, line "
                             f"{line}); pass texts that are UTF-8") from None
    data = data.removeprefix("\ufeff")  # a byte order mark is not text
    if "\x00" in data:
        line = data.count("\n", 0, data.index("\x00")) + 1
        raise ValueError(f"stdin: a NUL byte on line {line} (binary data, or UTF-16 / UTF-32 text); pass UTF-8 text")
    if not data:
        return []
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines, as text mode
    return lines[:-1] if lines[-1] == "" else lines
