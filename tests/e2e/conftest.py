"""Browser-test fixtures: one tiny real workspace + index, the real server in a thread, and
Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TOKEN = "e2e-token-4f2a"
N_PHOTOS = 14
ODD_ID = "odd name (1)%+é"  # an id that needs escaping everywhere (URL paths, export file names)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Catalog:
    root: Path  # the workspace folder
    demo: Path  # the demo catalog (images/ + manifest.json)
    ids: list[str]  # every image id, sorted like the gallery
    annotated: set[str]  # ids with a ground-truth box

    @property
    def ws(self):  # noqa: ANN201
        from tiefjax.workspace import Workspace

        return Workspace(self.root)

    def image_file(self, image_id: str) -> Path:
        return self.demo / "images" / f"{image_id}.jpg"

    def size(self, image_id: str) -> tuple[int, int]:
        from tiefjax.store import Store

        with Store(self.ws.store_path) as store:
            rec = store.get_image(image_id)
        return rec.width, rec.height


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """A demo catalog with ground-truth boxes and triplets, indexed (unsupervised)."""
    from tiefjax.catalog import init_workspace
    from tiefjax.demo_catalog import load_ground_truth, make_demo_catalog
    from tiefjax.index.build import build_index
    from tiefjax.index.config import IndexConfig
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    base = tmp_path_factory.mktemp("e2e")
    manifest = make_demo_catalog(base / "demo", n=N_PHOTOS, seed=0)
    images = base / "demo" / "images"
    shutil.copy(images / f"{manifest.photos[0].id}.jpg", images / f"{ODD_ID}.jpg")
    init_workspace(base / "ws", images)
    ws = Workspace(base / "ws")
    with Store(ws.store_path) as store:
        load_ground_truth(store, manifest, 0)
        ids = store.image_ids()
        annotated = set(store.boxes())
    assert ODD_ID in ids
    build_index(ws, IndexConfig.tiny(), progress=False, log=lambda _msg: None)
    return Catalog(root=base / "ws", demo=base / "demo", ids=sorted(ids), annotated=annotated)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server_url(catalog: Catalog) -> Iterator[str]:
    """The real tiefjax server (create_app + uvicorn) in a background thread."""
    with serve(catalog.ws) as url:
        yield url


@dataclass
class Bare:
    ws: object  # a Workspace
    url: str
    index_from: Path  # the index folder of the indexed catalog, to install later


@pytest.fixture
def bare(catalog: Catalog, tmp_path: Path) -> Iterator[Bare]:
    """A served copy of the catalog with its annotations but no search index yet."""
    from tiefjax.catalog import init_workspace
    from tiefjax.demo_catalog import load_ground_truth, load_manifest
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    init_workspace(tmp_path / "ws", catalog.demo / "images")
    ws = Workspace(tmp_path / "ws")
    with Store(ws.store_path) as store:
        load_ground_truth(store, load_manifest(catalog.demo), 0)
    with serve(ws) as url:
        yield Bare(ws, url, catalog.ws.index_dir)


@contextmanager
def serve(ws) -> Iterator[str]:  # noqa: ANN001
    import uvicorn

    from tiefjax.server.app import create_app

    app = create_app(ws, token=TOKEN)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the tiefjax server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="package")  # closed after the browser tests: its event loop must not leak
def browser():  # noqa: ANN201
    exe = shutil.which("chromium")
    if exe is None:
        message = "Debian's chromium is not installed (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser tests, never skip them
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    # generous waits: the first upload search compiles the encoder, and CI machines are shared
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session", autouse=True)
def _fresh_failure_shots() -> None:
    """Screenshots of failures from an earlier run would mislead; drop them."""
    for old in ARTIFACTS.glob("FAILED-*.png"):
        old.unlink(missing_ok=True)


class PageErrors(list):
    """JavaScript exceptions seen by a page; a test fails when any occurred."""


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):  # noqa: ANN001, ANN201
    """A fresh browser context (empty localStorage) per test; screenshots on failure."""
    yield from _page(browser, request, viewport={"width": 1280, "height": 900})


@pytest.fixture
def phone(browser, request: pytest.FixtureRequest):  # noqa: ANN001, ANN201
    """Like ``page``, on a 390×844 touch screen."""
    yield from _page(
        browser, request, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )


def _page(browser, request: pytest.FixtureRequest, **options):  # noqa: ANN001, ANN003, ANN202
    context = browser.new_context(**options)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    pg.bad_responses = []  # (status, url) of every answer >= 400
    pg.on(
        "response",
        lambda r: pg.bad_responses.append((r.status, r.url)) if r.status >= 400 else None,
    )
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        shot(pg, f"FAILED-{request.node.name}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def shot(page, name: str) -> Path:  # noqa: ANN001
    """Save a full-page screenshot under test-artifacts/e2e/ (kept as a CI artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
