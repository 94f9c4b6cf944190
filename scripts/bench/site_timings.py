#!/usr/bin/env python3
"""Site timings in a real browser (Debian's Chromium driven by Playwright): first gallery paint,
the next and the last gallery page, similar images after a click, an upload search's round trip,
a box save.

    .venv/bin/python scripts/bench/site_timings.py [--workspace WS] [--rounds 5]
        [--gallery-images 100000]

Without ``--workspace`` it builds the default demo (``tiefjax demo --no-serve``, a few minutes
the first time, re-used after) in ``/tmp/tiefjax-site-bench``. ``--gallery-images N`` instead
times a catalog of N images made as ``scripts/bench/scale.py`` makes them (store rows, clustered
synthetic descriptors indexed by ``build_from_descriptors``, one small JPEG per image), in
``/tmp/tiefjax-site-bench-N``: everything but the upload search, whose encoder does not match
synthetic descriptors. The real server (create_app +
uvicorn) runs in this process; each figure is the median of ``--rounds`` runs in fresh browser
contexts, timed in the page from the action to the first animation frame showing the result:

- gallery: navigation start -> first card on screen, and -> first thumbnail received (cards
  are built, and their thumbnails requested, before the page attaches them: the second can come
  first);
- next page / last page: a click on the pager's "Next" (the site asks for the page after the
  last id shown: a keyset cursor) or "»" (the last page, by offset) -> the new page's first card
  on screen;
- similar: click on a gallery card -> first similar card visible;
- upload: file chosen on the search page -> first result card visible (decode, locate, encode,
  search, render);
- box save: ``s`` pressed on a box nudged by one pixel -> status "saved" (then it is nudged
  back and saved again, untimed: a workspace's boxes end where they were, one version later).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TOKEN = "site-bench-token"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def serve(ws):  # noqa: ANN001, ANN201
    import socket

    import uvicorn

    from tiefjax.server.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(ws, token=TOKEN), log_level="warning", lifespan="on")
    )
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def seen(page, condition: str) -> float:  # noqa: ANN001
    """``performance.now()`` of the first animation frame at which ``condition`` (JS) holds,
    measured in the page (no round trip to this process in the figure)."""
    check = f"() => ({condition}) && performance.now()"
    return page.wait_for_function(check, polling="raf").json_value()


def timed(page, action, condition: str) -> float:  # noqa: ANN001
    """Milliseconds from just before ``action()`` to the frame where ``condition`` holds."""
    t0 = page.evaluate("performance.now()")
    action()
    return seen(page, condition) - t0


def page_turn(page, link: str) -> float:  # noqa: ANN001
    """Milliseconds from a click on the top pager's ``link`` to the new page's first card."""
    first = json.dumps(page.locator("#gallery-grid a.card").first.get_attribute("data-id"))
    shown = "document.querySelector('#gallery-grid a.card')?.dataset.id"
    pager_link = page.locator(".pager").first.get_by_role("link", name=link)
    return timed(page, pager_link.click, f"({shown} ?? {first}) !== {first}")


def one_round(browser, url: str, upload: Path | None, box_id: str) -> dict[str, float]:  # noqa: ANN001
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    ctx.add_init_script(f"localStorage.setItem('tiefjax.token', '{TOKEN}')")
    page = ctx.new_page()
    card = "document.querySelector('#gallery-grid a.card')"
    thumbs = "performance.getEntriesByType('resource').filter(e => e.name.includes('/thumb'))"
    out = {}
    page.goto(url + "#/gallery")
    out["gallery first card"] = seen(page, card)
    seen(page, f"{thumbs}.length > 0")
    out["first thumbnail"] = page.evaluate(f"Math.min(...{thumbs}.map(e => e.responseEnd))")
    out["next page"] = page_turn(page, "Next page")
    out["last page"] = page_turn(page, "Last page")
    out["similar images"] = timed(
        page,
        lambda: page.locator("#gallery-grid a.card").first.click(),
        "document.querySelector('#similar-grid .card')",
    )
    if upload is not None:
        page.goto(url + "#/search")
        page.wait_for_selector("body[data-ready='true']")
        out["upload search"] = timed(
            page,
            lambda: page.set_input_files("#search-file", str(upload)),
            "document.querySelector('#search-grid .card')",
        )
    page.goto(url + f"#/boxes/{box_id}?order=ids")
    page.wait_for_selector("#box-stage[data-ready='true']")
    page.keyboard.press("Alt+ArrowRight")  # a change to save (nudged one pixel)
    saved = "document.querySelector('#box-status[data-state=\"saved\"]')"
    out["box save"] = timed(page, lambda: page.keyboard.press("s"), saved)
    page.keyboard.press("Alt+ArrowLeft")  # and back where it was (untimed)
    page.keyboard.press("s")
    page.wait_for_selector("#box-status[data-state='saved']")
    ctx.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gallery-images", type=int, default=0, help="time a synthetic catalog")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    if args.gallery_images:
        sys.path.insert(0, str(Path(__file__).parent))
        from scale import synthetic_workspace

        ws = synthetic_workspace(args.gallery_images, photos=True)
    else:
        if args.workspace is None:
            from tiefjax.demo import run_demo

            args.workspace = Path("/tmp/tiefjax-site-bench")
            run_demo(args.workspace, serve=False, out=lambda _line: None)
        ws = Workspace(args.workspace)
    with Store(ws.store_path) as store:
        total = store.count_images()
        middle = store.catalog_page(offset=total // 2, limit=1).items[0].image
        box_id = min(store.boxes())
    upload = None if args.gallery_images else Path(middle.path)
    exe = shutil.which("chromium")
    if exe is None:
        print("Debian's chromium is not installed (scripts/test installs it)")
        return 1
    server, url = serve(ws)
    print(f"workspace {ws.root}: {total} images; server {url}")
    rounds = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        one_round(browser, url, upload, box_id)  # warm-up: compiles the encoder, fills caches
        for _ in range(args.rounds):
            rounds.append(one_round(browser, url, upload, box_id))
        browser.close()
    server.should_exit = True
    print(f"median of {args.rounds} rounds (after one warm-up), ms:")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        low, high = min(values), max(values)
        print(f"  {name:<20} {statistics.median(values):7.0f}   (min {low:.0f}, max {high:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
