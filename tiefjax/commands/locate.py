"""``tiefjax locate WS IMAGE...``: the product box of each photo."""

from __future__ import annotations

import argparse
import json

from tiefjax.errors import TiefjaxError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("locate", help="find the product's bounding box in photos")
    p.add_argument("workspace", help="workspace folder with a trained classifier and regressor")
    p.add_argument("images", nargs="+", help="photo files (JPEG, PNG, WebP)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tiefjax.images import load_rgb
    from tiefjax.locate import Locator
    from tiefjax.workspace import Workspace

    locator = Locator.load(Workspace(args.workspace).require())
    failed = 0
    for path in args.images:
        try:
            found = locator.locate(load_rgb(path))
        except TiefjaxError as err:
            failed += 1
            print(json.dumps({"image": path, "error": str(err)}) if args.json else str(err))
            continue
        if args.json:
            print(json.dumps({"image": path, **found.to_json()}))
        else:
            left, top, right, bottom = found.box
            note = "  (no foreground window: whole image)" if found.fallback else ""
            print(
                f"{path}: box {left:.0f},{top:.0f},{right:.0f},{bottom:.0f}  "
                f"p={found.probability:.3f}  windows={found.windows}{note}"
            )
    return 1 if failed else 0
