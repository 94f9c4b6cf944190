"""``tiefjax locate WS IMAGE...``: the product box of each photo."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tiefjax.errors import TiefjaxError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("locate", help="find the product's bounding box in photos")
    p.add_argument("workspace", help="workspace folder with a trained classifier and regressor")
    p.add_argument("images", nargs="+", help="photo files (JPEG, PNG, WebP)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Photos are decoded ahead in threads (JPEGs only as big as the locator needs) and located
    ``[locate] batch_size`` at a time; answers come out in the order given, boxes in each photo's
    own pixels, a photo that cannot be read as its own error line."""
    from tiefjax.images import load_rgb_scaled, prefetch
    from tiefjax.locate import Locator
    from tiefjax.workspace import Workspace

    locator = Locator.load(Workspace(args.workspace).require())
    failed = 0
    chunk: list[tuple[str, Any]] = []  # (path, (photo, scale) or its error), in input order
    short_side = locator.config.decode_short_side

    def flush() -> None:
        nonlocal failed
        decoded = [value for _, value in chunk if not isinstance(value, BaseException)]
        located = iter(locator.locate_decoded(decoded))
        for path, value in chunk:
            if isinstance(value, BaseException):
                failed += 1
                print(json.dumps({"image": path, "error": str(value)}) if args.json else value)
            else:
                _report(path, next(located), args.json)
        chunk.clear()

    def decode(path: str) -> Any:
        return load_rgb_scaled(path, short_side)

    for path, value in prefetch(decode, args.images):
        if isinstance(value, BaseException) and not isinstance(value, TiefjaxError):
            flush()  # report the photos before it, then fail loudly: a bug, not bad input
            raise value
        chunk.append((path, value))
        if len(chunk) >= locator.batch_size:
            flush()
    flush()
    return 1 if failed else 0


def _report(path: str, found: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": path, **found.to_json()}))
        return
    left, top, right, bottom = found.box
    note = "  (no foreground window: whole image)" if found.fallback else ""
    print(
        f"{path}: box {left:.0f},{top:.0f},{right:.0f},{bottom:.0f}  "
        f"p={found.probability:.3f}  windows={found.windows}{note}"
    )
