"""The ``mt5fn`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` -- a callable
taking the parsed arguments and returning an exit code. Modules are found by
name, so adding a command is adding a file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    from ._checks import OneLineParser

    parser = OneLineParser(prog="mt5fn", description="T5 / mT5 / UMT5 as pure PyTorch functions.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand, as its own parser would
        prog = f"mt5fn {args.command}" if getattr(args, "command", None) else "mt5fn"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see {prog} --help)\n")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ._checks import check_common, fail
    from ..tokenizer import hold_panic_output

    hold_panic_output()  # a tokenizers panic's own stderr lines would break the one-line rule

    try:
        check_common(args.command, args)  # shared options, before any work (cli/_checks.py)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mt5fn: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, MemoryError) as error:
        # The one-line fallback for a bad input a subcommand did not catch itself: never a traceback.
        return fail(args.command, error)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # noqa: BLE001 -- RecursionError, UnpicklingError, a pyo3 PanicException
        # (a BaseException) from `tokenizers` / `safetensors`, a torch RuntimeError: still one line, named.
        return fail(args.command, f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    sys.exit(main())
