"""Heavy uploads cannot stall the server (issue 14, item 1): a full upload queue is answered
with 503 and Retry-After before the body is read, an upload past its deadline gets 503 and its
queued work is dropped, and similar-by-id stays fast while the search thread is busy."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _server_fakes import FakeSearcher, _jpeg
from starlette.testclient import TestClient

from tiefjax.catalog import init_workspace
from tiefjax.server import ServerConfig, create_app
from tiefjax.server import app as server_app
from tiefjax.store import Store
from tiefjax.workspace import Workspace

JPEG = _jpeg(40, 40)


class BlockedSearcher(FakeSearcher):
    """Searches wait until ``release`` is set; ``started`` counts the searches that began."""

    def __init__(self, ids: list[str]):
        super().__init__(ids)
        self.release = threading.Event()
        self.started = 0

    def search_many(self, queries, k, mode, errors="raise"):
        self.started += 1
        assert self.release.wait(30), "the test never released the search"
        return super().search_many(queries, k, mode, errors)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("load")
    (root / "images").mkdir()
    for i in range(4):
        (root / "images" / f"img{i}.jpg").write_bytes(_jpeg(48, 40, seed=i))
    init_workspace(root / "ws", root / "images")
    return Workspace(root / "ws")


@pytest.fixture
def searcher(workspace) -> BlockedSearcher:
    with Store(workspace.store_path) as store:
        return BlockedSearcher(store.image_ids())


def _app(workspace, searcher, **settings):
    config = ServerConfig(batch_max=1, batch_wait_ms=0, reload_check_s=60, **settings)
    return create_app(workspace, token="t", config=config, searcher=searcher)


def _upload(client):
    return client.post("/api/search", files={"image": ("a.jpg", JPEG)})


def _wait_until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the server"
        time.sleep(0.01)


def test_full_upload_queue_is_503_with_retry_after_and_others_stay_fast(workspace, searcher):
    app = _app(workspace, searcher, max_active_uploads=2)
    gate = app.state.tiefjax.uploads
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        try:
            running = [pool.submit(_upload, client) for _ in range(2)]  # one searching, one queued
            _wait_until(lambda: searcher.started == 1 and gate.active == 2)
            third = pool.submit(_upload, client).result(timeout=10)  # old code: waits here
            assert third.status_code == 503, third.text
            assert third.json()["error"]["code"] == "overloaded"
            assert int(third.headers["Retry-After"]) >= 1
            t0 = time.monotonic()
            similar = client.get("/api/images/img1/similar", params={"k": 2})
            assert similar.status_code == 200 and time.monotonic() - t0 < 1.0
        finally:
            searcher.release.set()
        assert [f.result(timeout=10).status_code for f in running] == [200, 200]
        assert gate.active == 0 and _upload(client).status_code == 200


def test_upload_past_its_deadline_is_503_and_its_queued_search_is_dropped(workspace, searcher):
    app = _app(workspace, searcher, upload_deadline_s=0.5)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        try:
            t0 = time.monotonic()
            first = pool.submit(_upload, client)  # searching, blocked past its deadline
            _wait_until(lambda: searcher.started == 1)
            queued = pool.submit(_upload, client)  # waits behind it, also past its deadline
            responses = [first.result(timeout=10), queued.result(timeout=10)]
            elapsed = time.monotonic() - t0
        finally:
            searcher.release.set()
        for r in responses:
            assert r.status_code == 503, r.text
            assert "did not finish within 0.5 s" in r.json()["error"]["message"]
            assert "Retry-After" in r.headers
        assert elapsed < 3.0
        _wait_until(lambda: app.state.tiefjax.uploads.active == 0)
        assert _upload(client).status_code == 200
    assert searcher.started == 2  # the queued search was dropped, the last one ran


def test_a_decode_past_the_deadline_keeps_its_place_until_it_ends(workspace, searcher, monkeypatch):
    searcher.release.set()
    decoding = threading.Event()
    real_decode = server_app.decode_upload

    def slow_decode(*args):
        decoding.wait(30)
        return real_decode(*args)

    monkeypatch.setattr(server_app, "decode_upload", slow_decode)
    app = _app(workspace, searcher, upload_deadline_s=0.3, max_active_uploads=1)
    gate = app.state.tiefjax.uploads
    with TestClient(app) as client:
        try:
            late = _upload(client)
            assert late.status_code == 503, late.text
            assert gate.active == 1  # the decode still runs in its thread
            busy = _upload(client)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
        finally:
            decoding.set()
        _wait_until(lambda: gate.active == 0)
        assert _upload(client).status_code == 200
