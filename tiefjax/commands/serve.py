"""``tiefjax serve WS`` (web server + site) and ``tiefjax export-site WS OUT`` (static copy)."""

from __future__ import annotations

import argparse
import ipaddress
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the API and the web site (gallery, search, editors)")
    p.add_argument("workspace", help="workspace folder")
    p.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    p.add_argument(
        "--token",
        default=None,
        help="bearer token the editors need to save (default: TIEFJAX_TOKEN, [server] token, "
        "or a new random one, printed at start)",
    )
    p.set_defaults(func=serve)

    e = sub.add_parser("export-site", help="write the gallery as static files for any web host")
    e.add_argument("workspace", help="workspace folder")
    e.add_argument("out", help="output folder (created; an earlier export there is replaced)")
    e.add_argument("--k", type=int, default=20, help="neighbours per image (default 20)")
    e.add_argument("--page-size", type=int, default=48, help="images per page (default 48)")
    e.set_defaults(func=export)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    from tiefjax.errors import InvalidInput
    from tiefjax.server.app import create_app
    from tiefjax.server.config import ServerConfig
    from tiefjax.server.listen import make_server
    from tiefjax.workspace import Workspace

    ws = Workspace(args.workspace).require()
    config = ws.section("server", ServerConfig)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    if not 1 <= port <= 65535:
        where = "--port" if args.port is not None else "[server] port"
        raise InvalidInput(f"{where} must be a TCP port from 1 to 65535, got {port}")
    print("loading the workspace and its search index ...", file=sys.stderr)
    app = create_app(ws, token=args.token, config=config)
    print(f"tiefjax serving {ws.root}")
    note = "new each start; fix it with --token" if app.state.token_generated else "as given"
    print(f"  token: {app.state.token}   (the editors ask for it once; {note})")
    if not _is_loopback(host):
        print(
            f"  note: listening on {host}, reachable from other machines; writes still need "
            "the token, but use HTTPS (a reverse proxy) beyond a trusted network",
            file=sys.stderr,
        )
    sys.stdout.flush()

    def ready(url: str) -> None:
        print(f"  ready: {url}   (listening; Ctrl-C stops)", flush=True)

    make_server(app, host, port, config, ready).run()
    return 0


def export(args: argparse.Namespace) -> int:
    from tiefjax.errors import InvalidInput
    from tiefjax.export_site import export_site

    if args.k < 1 or args.k > 50:
        raise InvalidInput(f"--k must be from 1 to 50, got {args.k}")
    if args.page_size < 1 or args.page_size > 200:
        raise InvalidInput(f"--page-size must be from 1 to 200, got {args.page_size}")
    report = export_site(args.workspace, args.out, k=args.k, page_size=args.page_size)
    print(report.summary())
    return 0
