"""The ``tiefjax`` command line: a thin parser; every subcommand calls one library function.

Subcommands live in ``tiefjax/commands/<area>.py``, each with ``register(subparsers)``. Errors the
user can fix (:class:`TiefjaxError`) are printed as one plain message with exit code 2; Ctrl-C
exits with 130 and a note that the command can be re-run to resume. Compiled programs are
cached on disk between runs (:mod:`tiefjax.compile_cache`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tiefjax.compile_cache import use_compile_cache
from tiefjax.errors import TiefjaxError

#: Modules under ``tiefjax.commands`` that contribute subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "catalog",  # init, demo-catalog, import, export
    "port",  # port
    "prepare",  # prepare
    "train",  # train
    "locate",  # locate
    "index",  # index, search, score
    "serve",  # serve, export-site
    "demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiefjax",
        description="Visual product search for image catalogs (TiefVision on JAX/Flax).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tiefjax.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"tiefjax.commands.{name}":
                continue  # area not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_compile_cache()
    try:
        result = args.func(args)
    except TiefjaxError as err:
        print(f"tiefjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ntiefjax {args.command}: interrupted; finished work is kept, re-run to resume.",
            file=sys.stderr,
        )
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
