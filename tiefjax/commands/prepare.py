"""``tiefjax prepare WS [--force]``: write the training sets and print their summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="write the crop, box-regression and triplet training sets",
        description="Cut foreground/background crops, box-regression crops and triplet product "
        "crops from the annotated catalog into tensorflow-datasets (ArrayRecord) sets under "
        "WS/datasets, split into train and test by image. Runs only when the annotations or "
        "the [prepare] settings changed since the last run (or with --force).",
    )
    p.add_argument("workspace", type=Path, help="workspace folder")
    p.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from tiefjax.prepare import prepare  # noqa: PLC0415 (keeps `tiefjax --help` fast)
    from tiefjax.workspace import Workspace  # noqa: PLC0415

    with Workspace(args.workspace).writing("the prepared training sets") as ws:
        summary = prepare(ws, force=args.force)
    print(summary.table())
    return 0
