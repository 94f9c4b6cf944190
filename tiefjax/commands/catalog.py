"""``tiefjax init``, ``import``, ``export``, ``demo-catalog``: the catalog and its annotations."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tiefjax.errors import InvalidInput

_T = TypeVar("_T")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create or refresh a workspace from a folder of photos",
        description="Register every JPEG/PNG/WebP directly inside --images (image id = file "
        "stem). Re-run it to pick up added, changed and removed photos; without --images the "
        "folder used last time is scanned again. Unusable files are listed and skipped.",
    )
    p.add_argument("workspace", type=Path, help="workspace folder (created when missing)")
    p.add_argument("--images", type=Path, default=None, help="folder of catalog photos")
    p.set_defaults(func=_init)

    p = sub.add_parser(
        "import",
        help="import boxes and triplets from a JSON or CSV file",
        description="All-or-nothing: every row is checked first; any bad row is reported "
        "(with its line) and nothing is written. Imported boxes replace current ones.",
    )
    _add_file_arguments(p, "a .json or .csv file made by tiefjax export")
    p.set_defaults(func=_import)

    p = sub.add_parser(
        "export",
        help="export boxes and triplets to a JSON or CSV file",
        description="Writes every box and triplet of the workspace (CSV: one file, kind column).",
    )
    _add_file_arguments(p, "output .json or .csv file")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "demo-catalog",
        help="write a synthetic product-photo catalog with ground truth",
        description="Writes OUT/images/<id>.jpg and OUT/manifest.json (boxes, product groups); "
        "deterministic for a seed.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=60, help="number of photos (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_demo_catalog)


def _add_file_arguments(p: argparse.ArgumentParser, file_help: str) -> None:
    """``workspace file [--format]``: what :func:`_with_store` hands to import and export."""
    p.add_argument("workspace", type=Path)
    p.add_argument("file", type=Path, help=file_help)
    p.add_argument("--format", choices=("json", "csv"), default=None, help="default: by suffix")


def _init(args: argparse.Namespace) -> int:
    from tiefjax.catalog import init_workspace

    report = init_workspace(args.workspace, args.images)
    print(report.summary())
    return 0


def _with_store(args: argparse.Namespace, action: Callable[..., _T]) -> _T:
    """``action(store, args.file, args.format)`` on the store of an existing workspace."""
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    ws = Workspace(args.workspace).require()
    with Store(ws.store_path) as store:
        return action(store, args.file, args.format)


def _import(args: argparse.Namespace) -> int:
    from tiefjax.annotations_io import import_annotations

    report = _with_store(args, import_annotations)
    print(report.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    from tiefjax.annotations_io import export_annotations

    report = _with_store(args, export_annotations)
    print(
        f"exported {report.boxes} box(es) and {report.triplets} triplet(s) "
        f"to {report.path} ({report.format})"
    )
    return 0


def _demo_catalog(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InvalidInput(f"--n must be at least 1, got {args.n}")
    from tiefjax.demo_catalog import make_demo_catalog

    make_demo_catalog(args.out, args.n, args.seed)
    out = args.out.resolve()
    print(
        f"wrote {args.n} demo photos to {out / 'images'} and their ground truth to "
        f"{out / 'manifest.json'}\nnext: tiefjax init WORKSPACE --images {out / 'images'}"
    )
    return 0
