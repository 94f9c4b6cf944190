"""``tiefjax annotators`` and ``tiefjax history``: who may annotate, and who changed what."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tiefjax.history import PAGE_MAX


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "annotators",
        help="list annotators, or make (--add) or revoke (--remove) an annotator's token",
        description="Each annotator gets a token of their own for `tiefjax serve`; the history "
        "records their name on every box and triplet they change. A token is printed once "
        "(only its hash is stored); --remove revokes it and keeps the name in the history.",
    )
    p.add_argument("workspace", type=Path)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--add", metavar="NAME", help="make a token for a new annotator")
    action.add_argument("--remove", metavar="NAME", help="revoke this annotator's token")
    p.add_argument("--json", action="store_true", help="JSON: the list, or the new token")
    p.set_defaults(func=_annotators)

    p = sub.add_parser(
        "history",
        help="show who changed which box or triplet, and when (newest first)",
        description="Every box and triplet change, by the server (named by the token used), "
        "`tiefjax import`, `tiefjax init` and the demo.",
    )
    p.add_argument("workspace", type=Path)
    p.add_argument("--image", help="only this image (a triplet's reference)")
    p.add_argument("--annotator", help="only this annotator")
    p.add_argument("--limit", type=int, default=50, help=f"most changes shown (1-{PAGE_MAX})")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_history)


def _annotators(args: argparse.Namespace) -> int:
    from tiefjax.errors import InvalidInput
    from tiefjax.server.config import ServerConfig
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    ws = Workspace(args.workspace).require()
    owner = ws.section("server", ServerConfig).token_annotator
    if args.add == owner:
        raise InvalidInput(
            f"{owner!r} is what changes made with the server's own token are recorded as "
            "([server] token_annotator); pick another annotator name"
        )
    with Store(ws.store_path) as store:
        if args.add:
            token = store.add_annotator(args.add)
            if args.json:
                print(json.dumps({"name": args.add, "token": token}))
                return 0
            print(f"annotator {args.add!r} added; their token (shown only now):")
            print(token)
            return 0
        if args.remove:
            store.remove_annotator(args.remove)
            print(f"annotator {args.remove!r} removed: their token no longer works")
            return 0
        people = store.annotators()
    if args.json:
        print(json.dumps([vars(a) for a in people]))
    elif not people:
        print("no annotators yet; add one with: tiefjax annotators WS --add NAME")
    for a in [] if args.json else people:
        print(f"{a.name:<20} since {a.created_at}  {a.changes} change(s)")
    return 0


def _history(args: argparse.Namespace) -> int:
    from tiefjax.store import Store
    from tiefjax.validate import check_id
    from tiefjax.workspace import Workspace

    ws = Workspace(args.workspace).require()
    image = None if args.image is None else check_id(args.image, "--image")
    with Store(ws.store_path) as store:
        changes, _ = store.changes(image, args.annotator, None, args.limit)
    for c in changes:
        if args.json:
            print(json.dumps(c.to_json()))
        else:
            what = c.detail.get("box") or c.detail.get("previous")
            if "triplet" in c.detail:
                what = f"{c.detail['positive']} over {c.detail['negative']}"
            print(f"{c.at}  {c.annotator:<12} {c.action:<16} {c.image_id}  {what}")
    if not changes and not args.json:
        print("no changes recorded (matching these filters)")
    return 0
