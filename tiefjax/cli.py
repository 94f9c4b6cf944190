"""The ``tiefjax`` command line: a thin parser; every subcommand calls one library function.

Subcommands live in ``tiefjax/commands/<area>.py``, each with ``register(subparsers)``. Errors the
user can fix (:class:`TiefjaxError`) are printed as one plain message with exit code 2; Ctrl-C
exits with 130 and a note that the command can be re-run to resume. Compiled programs are
cached on disk between runs (:mod:`tiefjax.compile_cache`).

A multi-process run (JAX's coordinator variables set) joins before anything else touches JAX
(:func:`tiefjax.distributed.start`), checks that every process runs the same command, and runs
under :mod:`tiefjax.supervise` so that a lost process ends the others with one line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from jax.errors import JaxRuntimeError

from tiefjax import distributed
from tiefjax.compile_cache import use_compile_cache
from tiefjax.errors import TiefjaxError
from tiefjax.models import DTYPE_VAR, DTYPES
from tiefjax.supervise import WORKER_VAR, run_supervised

#: Modules under ``tiefjax.commands`` that contribute subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "catalog",  # init, demo-catalog, import, export
    "annotators",  # annotators, history
    "port",  # port
    "pretrain",  # pretrain
    "prepare",  # prepare
    "train",  # train
    "locate",  # locate
    "index",  # index, search, score
    "serve",  # serve, export-site
    "demo",  # demo
)
#: Commands that compute on devices: they say which process and devices they run on.
DEVICE_COMMANDS = frozenset({"pretrain", "train", "locate", "index", "search", "score", "demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiefjax",
        description="Visual product search for image catalogs (TiefVision on JAX/Flax).",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="encoder compute dtype for this command (overrides [compute] dtype; auto = "
        "bfloat16 on GPU/TPU, float32 on the CPU)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"tiefjax.commands.{name}").register(sub)
    return parser


def _abandoned_callback(unraisable: Any) -> bool:
    """Whether an unraisable error is a completion callback that found asyncio's loop closed.

    Orbax restores through asyncio and tensorstore. When one read of a damaged checkpoint fails,
    the restore ends (and closes its loop) while other reads are still in flight; their callbacks
    then fail in ``call_soon_threadsafe`` and Python prints each as a stray "Event loop is
    closed" traceback after the one-line error that matters (issue 14)."""
    exc = unraisable.exc_value
    if not isinstance(exc, RuntimeError) or str(exc) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(frame.name == "call_soon_threadsafe" for frame in frames)


def _quiet_abandoned_callbacks() -> None:
    """Drop :func:`_abandoned_callback` reports; every other one reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "__name__", "") == "_unraisable":
        return  # already installed (main() called twice in one process)

    def _unraisable(unraisable: Any) -> None:
        if not _abandoned_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = _unraisable


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _quiet_abandoned_callbacks()
    if args.dtype:
        os.environ[DTYPE_VAR] = args.dtype  # read where the encoder is made; children inherit it
    try:
        if distributed.requested() and not os.environ.get(WORKER_VAR):
            return run_supervised(argv, args.command)
        if distributed.start():
            distributed.announce(args.command)
            distributed.check_same("command lines", json.dumps(argv))
        elif args.command in DEVICE_COMMANDS:
            distributed.announce(args.command)
        use_compile_cache()
        result = args.func(args)
    except TiefjaxError as err:
        print(f"tiefjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except JaxRuntimeError as err:
        if not distributed.requested():
            raise
        # a collective with a process that died fails here before JAX's heartbeat ends us
        print(
            f"tiefjax {args.command}: error: another process of this run stopped mid-run "
            f"({str(err).splitlines()[0][:160]}); see its output, then start every process "
            f"again with the same command (finished work is kept)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"\ntiefjax {args.command}: interrupted; finished work is kept, re-run to resume.",
            file=sys.stderr,
        )
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
