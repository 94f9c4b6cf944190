"""``tiefjax index``, ``search``, ``score``: build the similarity index and query it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODES = ("unsupervised", "supervised")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="encode the catalog and build the similarity index",
        description="Locates the product in each photo (annotated box, else the trained "
        "locator, else the whole photo), encodes the crop and builds the unsupervised (and, "
        "once `tiefjax train WS ranking` ran, supervised) index. Incremental: only new or "
        "changed photos are encoded. The previous index stays usable until the new one is "
        "complete; recall@10 against exact search is measured and printed.",
    )
    p.add_argument("workspace", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_index)

    p = sub.add_parser(
        "search",
        help="most similar catalog images to a photo file or a catalog image id",
        description="QUERY is an image file or the id of a catalog image (file stem). The query "
        "itself is left out of the results unless --include-self.",
    )
    p.add_argument("workspace", type=Path)
    p.add_argument("query", help="image file or catalog image id")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--mode", choices=MODES, default="unsupervised")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    p.add_argument("--include-self", action="store_true", help="keep the query in its results")
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "score",
        help="score new photos against the catalog into a JSONL file",
        description="One JSON line per photo: box, foreground probability and the top-k "
        "catalog ids with scores per mode. Resumable: photos already in --out are skipped. "
        "Unreadable photos get an error line.",
    )
    p.add_argument("workspace", type=Path)
    p.add_argument("inputs", help="folder of photos, a glob pattern (quote it) or one file")
    p.add_argument("--out", type=Path, required=True, help="output .jsonl (appended to)")
    p.add_argument("-k", type=int, default=10, help="results per photo (default 10)")
    p.add_argument(
        "--mode", choices=MODES, action="append", default=None, help="default: every mode"
    )
    p.set_defaults(func=_score)


def _index(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tiefjax.index.build import build_index
    from tiefjax.workspace import Workspace

    with Workspace(args.workspace).writing("the search index") as ws:
        report = build_index(ws)
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0


def _search(args: argparse.Namespace) -> int:
    from tiefjax.search import Searcher

    searcher = Searcher.load(args.workspace)
    result = searcher.search(args.query, k=args.k, mode=args.mode, include_self=args.include_self)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    box = ", ".join(f"{v:.0f}" for v in result.box)
    prob = "" if result.probability is None else f", p={result.probability:.2f}"
    print(f"# {args.mode}; box ({box}) from {result.box_source}{prob}")
    if result.copy_of is not None:
        print(f"# a copy of {result.copy_of} (aligned at {result.copy_score:.3f}): listed first")
    for hit in result.hits:
        print(f"{hit.id} {hit.score:.4f}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from tiefjax.score import score

    modes = tuple(dict.fromkeys(args.mode)) if args.mode else None
    report = score(args.workspace, args.inputs, args.out, k=args.k, modes=modes)
    print(report.summary())
    return 0
