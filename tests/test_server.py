"""The HTTP API: every endpoint, bad input, auth, traversal attempts, concurrent editors."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _server_fakes import FakeSearcher, _bomb_png, _jpeg, _png
from PIL import Image
from starlette.testclient import TestClient

from tiefjax.catalog import init_workspace
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.search import Searcher
from tiefjax.server import ServerConfig, create_app, uploads
from tiefjax.server.app import build_routes
from tiefjax.server.openapi import openapi_schema
from tiefjax.store import Detection, ImageRecord, Store
from tiefjax.workspace import Workspace

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_IMAGES = 6
SIDES = ("left", "top", "right", "bottom")


# -- a tiny indexed catalog ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """Six JPEGs and an oddly named PNG, registered and indexed (random encoder, tiny)."""
    root = tmp_path_factory.mktemp("srv")
    images = root / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        (images / f"img{i:02d}.jpg").write_bytes(_jpeg(64 + 8 * i, 48, seed=i))
    (images / "weird id %.png").write_bytes(_png(40, 30))
    init_workspace(root / "ws", images)
    ws = Workspace(root / "ws")
    build_index(ws, IndexConfig.tiny(), progress=False, log=lambda msg: None)
    with Store(ws.store_path) as store:
        store.put_detections([Detection("img01", (2, 3, 40, 30), 0.8, False)])
    return ws


@pytest.fixture(scope="module")
def ids(workspace) -> list[str]:
    with Store(workspace.store_path) as store:
        return store.image_ids()


@pytest.fixture(scope="module")
def real_searcher(workspace) -> Searcher:
    return Searcher.load(workspace)


@pytest.fixture()
def searcher(ids) -> FakeSearcher:
    return FakeSearcher(ids)


@pytest.fixture()
def client(workspace, real_searcher):
    """The app over the real index of the tiny workspace."""
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=real_searcher)
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def fake_client(workspace, searcher):
    """The app over a stand-in searcher with both modes and a known neighbour order."""
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as c:
        yield c


def _error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    assert "Traceback" not in r.text
    if code:
        assert body["error"]["code"] == code
    return body


# -- reads ---------------------------------------------------------------------------------------
def test_health_stats_openapi(client, ids):
    assert client.get("/api/health").json() == {"status": "ok"}
    stats = client.get("/api/stats").json()
    assert stats["images"] == len(ids) and stats["detections"] == 1
    index = stats["index"]
    assert index["modes"] == ["unsupervised"] and index["size"] == len(ids)
    assert index["recall_at_10"] == 1.0 and 0 <= index["age_s"] < 600
    assert index["built_at"].endswith("Z") and index["stale"] is None
    schema = client.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")


def test_stats_say_the_index_is_stale_when_it_does_not_cover_the_catalog(workspace, ids):
    """239 images catalogued and 39 indexed used to show "stale": null."""
    searcher = FakeSearcher(ids[:2] + ["gone"])
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as c:
        stale = c.get("/api/stats").json()["index"]["stale"]
    missing = len(ids) - 2
    assert f"{missing} of the {len(ids)} catalogued images are not in it" in stale
    assert "1 images in it were removed from the catalog" in stale
    assert f"tiefjax index {workspace.root}" in stale


def test_stats_compare_index_and_catalog_only_after_the_catalog_changed(tmp_path, monkeypatch):
    """Reading every id costs 0.7 s at 100k images: not on every /api/stats."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"a{i}.jpg").write_bytes(_jpeg(32, 32, seed=i))
    init_workspace(tmp_path / "ws", images)
    ws = Workspace(tmp_path / "ws")
    reads = []
    real = Store.image_ids
    monkeypatch.setattr(Store, "image_ids", lambda self: reads.append(1) or real(self))
    app = create_app(ws, token=TOKEN, config=ServerConfig.tiny(), searcher=FakeSearcher(["a0"]))
    with TestClient(app) as c:
        first = [c.get("/api/stats").json()["index"]["stale"] for _ in range(3)]
        assert len(reads) == 1 and first[0] == first[2]
        assert "2 of the 3 catalogued images are not in it" in first[0]
        (images / "a3.jpg").write_bytes(_jpeg(32, 32, seed=3))
        init_workspace(ws.root, images)  # another process adds a photo
        again = c.get("/api/stats").json()["index"]["stale"]
        assert len(reads) == 2 and "3 of the 4 catalogued images" in again
        with Store(ws.store_path) as store:
            before = store.catalog_version()
            store.remove_images(["a3", "nope"])
            assert store.catalog_version() == before + 1
            store.remove_images(["nope"])  # nothing removed: nothing changed
            assert store.catalog_version() == before + 1
        assert "2 of the 3 catalogued" in c.get("/api/stats").json()["index"]["stale"]


def test_openapi_lists_every_route(workspace, searcher):
    documented = {
        (path, method.upper()) for path, ops in openapi_schema()["paths"].items() for method in ops
    }
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)
    routes = build_routes(app.state.tiefjax)
    served = {
        ("/api" + r.path_format, m)  # the path without Starlette's {name:convertor} suffixes
        for r in routes
        for m in r.methods - {"HEAD"}
    }
    assert served == documented


def test_image_pages(client, ids):
    r = client.get("/api/images", params={"offset": 1, "limit": 3})
    page = r.json()
    assert page["total"] == len(ids) and page["offset"] == 1 and page["limit"] == 3
    assert [i["id"] for i in page["images"]] == ids[1:4]
    item = page["images"][0]
    assert item["id"] == "img01" and item["width"] == 72 and item["height"] == 48
    assert item["detection"] == {
        "left": 2.0, "top": 3.0, "right": 40.0, "bottom": 30.0, "score": 0.8, "fallback": False
    }  # fmt: skip
    assert client.get("/api/images").json()["limit"] == 48
    _error(client.get("/api/images", params={"limit": 201}), 400, "bad_request")
    _error(client.get("/api/images", params={"offset": "x"}), 400)


def test_image_pages_by_cursor_equal_pages_by_offset(client, ids):
    pages, after = [], None
    while True:
        page = client.get("/api/images", params={"limit": 3, **({"after": after} if after else {})})
        pages.append(page.json())
        after = page.json()["next"]
        if after is None:
            break
    for n, page in enumerate(pages):
        by_offset = client.get("/api/images", params={"offset": 3 * n, "limit": 3}).json()
        assert page["images"] == by_offset["images"] and page["next"] == by_offset["next"]
        assert [i["id"] for i in page["images"]] == ids[3 * n : 3 * n + 3]
    assert len(pages) == -(-len(ids) // 3)
    _error(client.get("/api/images", params={"after": "a\nb"}), 400, "bad_request")
    _error(client.get("/api/images?after="), 400, "bad_request")


@pytest.fixture(scope="module")
def deep_workspace(tmp_path_factory) -> Workspace:
    """2,000 registered images (no files: the gallery only reads the store), every 9th boxed."""
    root = tmp_path_factory.mktemp("deep")
    (root / "images").mkdir()
    init_workspace(root / "ws", root / "images")
    ws = Workspace(root / "ws")
    with Store(ws.store_path) as store:
        ids = [f"p{n:05d}" for n in range(2000)]
        store.upsert_images(ImageRecord(i, f"{i}.jpg", 64, 48, i) for i in ids)
        with store.transaction():
            for i in ids[::9]:
                store.put_box(i, (1, 2, 30, 40))
    return ws


def test_a_deep_gallery_page_is_one_sql_statement(deep_workspace):
    app = create_app(deep_workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=None)
    statements: list[str] = []
    with TestClient(app) as c:
        db = app.state.tiefjax.store._db
        for limit in (1, 200):
            db.set_trace_callback(statements.append)
            last = c.get("/api/images", params={"offset": 2000 - limit, "limit": limit}).json()
            keyset = c.get("/api/images", params={"after": "p01799", "limit": limit}).json()
            db.set_trace_callback(None)
            assert len(statements) == 2, statements  # one per page, whatever its size
            statements.clear()
            assert last["next"] is None and last["offset"] == 2000 - limit
            assert [i["id"] for i in last["images"]][-1] == "p01999"
            assert keyset["offset"] == 0 and keyset["images"][0]["id"] == "p01800"
    boxed = [i["id"] for i in last["images"] if i["box"] is not None]
    assert boxed == [f"p{n:05d}" for n in range(1800, 2000) if n % 9 == 0]
    assert last["images"][0]["box"] == {
        "left": 1.0, "top": 2.0, "right": 30.0, "bottom": 40.0, "version": 1
    }  # fmt: skip


def test_image_item_file_thumb(client, workspace):
    item = client.get("/api/images/img02").json()
    assert item == {"id": "img02", "width": 80, "height": 48, "box": None, "detection": None}
    r = client.get("/api/images/img02/file")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == (workspace.root.parent / "images" / "img02.jpg").read_bytes()
    r = client.get("/api/images/img02/thumb", params={"size": 128})
    assert r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert max(thumb.size) <= 128 and thumb.size[0] == 80  # never upscaled
    cached = list((workspace.cache_dir / "thumbs" / "128").iterdir())
    assert len(cached) == 1 and not cached[0].name.startswith(".")
    assert client.get("/api/images/img02/thumb", params={"size": 128}).content == r.content
    _error(client.get("/api/images/img02/thumb", params={"size": 100}), 400)
    weird = client.get("/api/images/" + "weird%20id%20%25").json()
    assert weird["id"] == "weird id %" and weird["width"] == 40
    r = client.get("/api/images/weird%20id%20%25/file")
    assert r.headers["content-type"] == "image/png"


def test_unknown_ids_are_404(client):
    for path in (
        "/api/images/nope",
        "/api/images/nope/file",
        "/api/images/nope/thumb",
        "/api/images/nope/similar",
        "/api/images/nope/box",
        "/api/candidates/nope",
    ):
        _error(client.get(path), 404, "not_found")
    _error(client.get("/api/triplets", params={"reference": "nope"}), 404)
    _error(client.put("/api/images/nope/box", json=_box(0), headers=AUTH), 404)


def test_unknown_api_paths_and_methods(client):
    _error(client.get("/api/nothing/here"), 404, "not_found")
    _error(client.post("/api/images"), 405, "method_not_allowed")
    _error(client.patch("/api/images/img01/box", json={}), 405)


def test_similar(client, ids, real_searcher):
    body = client.get("/api/images/img00/similar", params={"k": 3}).json()
    assert body["id"] == "img00" and body["mode"] == "unsupervised"
    want = real_searcher.neighbours("img00", 3, "unsupervised")
    rows = [real_searcher.row(h.id) for h in want]  # why each matched: the box it was indexed with
    boxes = [dict(zip(SIDES, r.box, strict=True)) for r in rows]
    assert body["hits"] == [
        {"id": h.id, "score": h.score, "box": box, "box_source": r.source}
        for h, r, box in zip(want, rows, boxes, strict=True)
    ]
    assert len(body["hits"]) == 3 and "img00" not in [h["id"] for h in body["hits"]]
    assert len(client.get("/api/images/img00/similar").json()["hits"]) == len(ids) - 1
    body = _error(client.get("/api/images/img00/similar", params={"mode": "supervised"}), 404)
    assert "tiefjax" in body["error"]["message"]  # says how to get a supervised index


def test_similar_supervised(fake_client, ids):
    r = fake_client.get("/api/images/img00/similar", params={"k": 3, "mode": "supervised"})
    body = r.json()
    assert body["id"] == "img00" and body["mode"] == "supervised"
    assert [h["id"] for h in body["hits"]] == ids[1:4]
    _error(fake_client.get("/api/images/img00/similar", params={"k": 51}), 400)
    _error(fake_client.get("/api/images/img00/similar", params={"mode": "magic"}), 400)


def test_similar_answers_cache_keeps_the_recently_asked(fake_client, searcher, monkeypatch):
    import tiefjax.server.app as app_module

    monkeypatch.setattr(app_module, "SIMILAR_CACHE_MAX", 2)
    asked = []
    members = searcher.neighbour_members
    monkeypatch.setattr(
        searcher, "neighbour_members", lambda i, k, mode: asked.append(i) or members(i, k, mode)
    )
    for image_id in ("img00", "img01", "img00", "img02", "img00", "img01"):
        assert fake_client.get(f"/api/images/{image_id}/similar").status_code == 200
    # img00 was asked again before img02 came in, so img01 (the least recent) made room
    assert asked == ["img00", "img01", "img02", "img01"]


def test_no_index_yet(workspace, monkeypatch):
    import tiefjax.server.app as app_module

    monkeypatch.setattr(app_module.ServerState, "_load_searcher", lambda self: None)
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny())
    with TestClient(app) as c:
        assert c.get("/api/stats").json()["index"] is None
        body = _error(c.get("/api/images/img00/similar"), 404)
        assert "tiefjax index" in body["error"]["message"]
        _error(c.post("/api/search", files={"image": ("a.jpg", _jpeg(32, 32))}), 404)
        assert c.get("/api/images").status_code == 200


def test_rebuilt_index_is_picked_up(workspace, searcher):
    searcher.built_at = time.time() - 1000
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)

    def reload():
        searcher.reloads += 1
        searcher.built_at = time.time()
        return True

    searcher.reload_if_changed = reload
    with TestClient(app) as c:
        deadline = time.time() + 5
        while c.get("/api/stats").json()["index"]["age_s"] > 100 and time.time() < deadline:
            time.sleep(0.01)
        assert c.get("/api/stats").json()["index"]["age_s"] < 100
        assert searcher.reloads >= 1


# -- upload search -------------------------------------------------------------------------------
def test_search_upload(client, ids, workspace):
    r = client.post(
        "/api/search",
        params={"k": 2},
        files={"image": ("../../etc/passwd", _jpeg(50, 40, seed=9), "text/plain")},
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["width"] == 50 and body["height"] == 40 and body["mode"] == "unsupervised"
    # no locator trained: the whole photo is used, and the answer says so
    assert body["box"] == {"left": 0.0, "top": 0.0, "right": 50.0, "bottom": 40.0}
    assert body["fallback"] is True and body["probability"] is None
    assert len(body["hits"]) == 2 and all(h["id"] in ids for h in body["hits"])
    assert body["copy_of"] is None and body["copy_score"] is None  # a new photo: no copy
    assert not list(workspace.root.rglob("passwd"))  # the client's name is never used
    # a catalog photo uploaded again finds itself
    photo = (workspace.root.parent / "images" / "img03.jpg").read_bytes()
    r = client.post("/api/search", params={"k": 1}, files={"image": ("x.jpg", photo)})
    assert r.status_code == 200 and r.json()["width"] == 88
    # a copy of it on a wider backdrop: the copy check names its source and lists it first
    padded = Image.new("RGB", (120, 80), (250, 250, 250))
    padded.paste(Image.open(io.BytesIO(photo)), (20, 17))
    out = io.BytesIO()
    padded.save(out, "PNG")
    r = client.post("/api/search", params={"k": 3}, files={"image": ("c.png", out.getvalue())})
    copied = r.json()
    assert copied["copy_of"] == "img03" and copied["hits"][0]["id"] == "img03", copied
    assert copied["copy_score"] >= IndexConfig().copy_threshold
    _error(
        client.post("/api/search", params={"mode": "supervised"}, files={"image": ("x", photo)}),
        404,
    )


def _big_jpeg(width: int, height: int) -> bytes:
    ramp = np.linspace(0, 255, max(width, height), dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :width], 128, ramp[:height, None]), -1)
    data = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(data, "JPEG", quality=85)
    return data.getvalue()


def test_search_upload_of_a_big_jpeg_answers_in_its_own_pixels(client, fake_client, searcher):
    big = _big_jpeg(2000, 1600)
    r = client.post("/api/search", params={"k": 1}, files={"image": ("big.jpg", big)})
    body = r.json()
    assert r.status_code == 200, body
    assert body["width"] == 2000 and body["height"] == 1600
    assert body["box"] == {"left": 0.0, "top": 0.0, "right": 2000.0, "bottom": 1600.0}
    # the search saw it at half size (shorter side >= the searcher's 448), boxes scale back
    r = fake_client.post("/api/search", params={"k": 1}, files={"image": ("big.jpg", big)})
    assert searcher.decoded_sizes == [(1000, 800)]
    assert r.json()["box"] == {"left": 1.0, "top": 2.0, "right": 1999.0, "bottom": 1598.0}


def test_search_upload_supervised(fake_client, ids):
    r = fake_client.post(
        "/api/search", params={"k": 2, "mode": "supervised"}, files={"image": ("a", _jpeg(50, 40))}
    )
    body = r.json()
    assert body["mode"] == "supervised" and [h["id"] for h in body["hits"]] == ids[:2]
    assert body["box"] == {"left": 1.0, "top": 2.0, "right": 49.0, "bottom": 38.0}
    assert body["probability"] == 0.9 and body["fallback"] is False


def test_search_png_and_webp(client):
    for fmt in ("PNG", "WEBP"):
        out = io.BytesIO()
        Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(out, fmt)
        r = client.post("/api/search", files={"image": ("x", out.getvalue())})
        assert r.status_code == 200, r.text
        assert r.json()["width"] == 30


def test_bad_uploads(client):
    jpeg = _jpeg(64, 64)
    _error(client.post("/api/search", files={"image": ("a.jpg", jpeg[:200])}), 422, "invalid_input")
    _error(
        client.post("/api/search", files={"image": ("a.jpg", b"GIF89a" + b"\0" * 100)}),
        415,
        "unsupported_media_type",
    )
    _error(client.post("/api/search", files={"image": ("a.jpg", b"")}), 422)
    big = b"\xff\xd8\xff" + b"\0" * (300 * 1024)  # over the tiny 256 KB limit
    _error(client.post("/api/search", files={"image": ("a.jpg", big)}), 413, "payload_too_large")
    _error(
        client.post("/api/search", files={"image": ("b.png", _bomb_png())}), 413, "image_too_large"
    )
    _error(client.post("/api/search", files={"image": ("b.png", _bomb_png(1500, 1500))}), 422)
    _error(client.post("/api/search", content=jpeg, headers={"Content-Type": "image/jpeg"}), 415)
    _error(client.post("/api/search", files={"other": ("a.jpg", jpeg)}), 400, "bad_request")
    _error(
        client.post(
            "/api/search",
            content=b"garbage",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        ),
        400,
    )
    # ...and the server still answers normally
    assert client.post("/api/search", files={"image": ("a.jpg", jpeg)}).status_code == 200
    assert client.get("/api/health").status_code == 200


def _gray_png(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (w, h)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("w", "h"), [(400_000, 100), (400, 1), (1, 400)])
def test_elongated_uploads_are_refused_before_any_decode(workspace, searcher, monkeypatch, w, h):
    """The attack images of issue 14: within the pixel limit, tiny as files, but resized to a
    448 px shorter side they would be 1,792,000x448 and 179,200x448 pixels."""
    data = _gray_png(w, h)
    assert len(data) < 64 * 1024 and w * h <= 40_000_000

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded an upload that should have been refused")

    monkeypatch.setattr(uploads, "load_rgb_scaled", no_decode)
    config = dataclasses.replace(ServerConfig.tiny(), max_upload_pixels=40_000_000)
    app = create_app(workspace, token=TOKEN, config=config, searcher=searcher)
    with TestClient(app) as c:
        started = time.perf_counter()
        r = c.post("/api/search", files={"image": ("a.png", data)})
        assert time.perf_counter() - started < 5
    message = _error(r, 413, "image_too_large")["error"]["message"]
    assert f"is {w}x{h}, more elongated than the 10:1 allowed" in message
    assert "max_upload_aspect" in message and not searcher.decoded_sizes


def test_aspect_limit_bounds_the_resized_photo():
    """At the limit an upload decodes; the photo the locator makes of it (shorter side 448) is
    at most 448 x 4480 pixels."""
    img, scale = uploads.decode_upload(_gray_png(2240, 224), 40_000_000, 448, 10.0)
    assert img.size == (2240, 224) and scale == (1.0, 1.0)
    with pytest.raises(uploads.ImageTooLarge, match="4,482x448 pixels"):
        uploads.decode_upload(_gray_png(2241, 224), 40_000_000, 448, 10.0)
    with pytest.raises(uploads.ImageTooLarge, match="448x4,482 pixels"):  # upright too
        uploads.decode_upload(_gray_png(224, 2241), 40_000_000, 448, 10.0)


@pytest.mark.parametrize("declared", ["9" * 5000, "\u00b2", "-1"])
def test_malformed_content_length_is_a_400(client, declared):
    request = client.build_request("POST", "/api/search", files={"image": ("a", _jpeg(20, 20))})
    request.headers["content-length"] = declared
    message = _error(client.send(request), 400, "bad_request")["error"]["message"]
    assert message.startswith("the Content-Length header must be a whole number")


def test_oversized_upload_without_content_length_is_cut_off(client):
    def body():
        yield b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(100):
            yield b"\xff" * 10_000  # 1 MB in total, never announced

    r = client.post(
        "/api/search",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    _error(r, 413, "payload_too_large")


def test_concurrent_uploads_are_batched(workspace, searcher):
    config = ServerConfig(batch_max=16, batch_wait_ms=50, reload_check_s=60)
    app = create_app(workspace, token=TOKEN, config=config, searcher=searcher)
    jpeg = _jpeg(40, 40)
    with TestClient(app) as c:

        def one(_):
            return c.post("/api/search", files={"image": ("a.jpg", jpeg)}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(8)))
    assert codes == [200] * 8
    assert sum(searcher.batches) == 8 and max(searcher.batches) > 1


class _SlowCostlySearcher(FakeSearcher):
    """Holds the search of an elongated photo until released; normal photos go at once."""

    def __init__(self, ids):
        super().__init__(ids)
        self.release = threading.Event()
        self.costly_started = threading.Event()

    def search_many(self, queries, k, mode, errors="raise"):
        if any(max(q.image.size) > 3 * min(q.image.size) for q in queries):
            self.costly_started.set()
            assert self.release.wait(30), "never released"
        return super().search_many(queries, k, mode, errors)


def test_a_normal_upload_never_waits_for_a_costly_one(workspace, ids):
    searcher = _SlowCostlySearcher(ids)
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)
    costly, normal = _png(900, 100), _jpeg(40, 40)  # 9:1 costs 6.75 photos; 1:1 costs one
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(c.post, "/api/search", files={"image": ("long.png", costly)})
        assert searcher.costly_started.wait(30)
        fast = c.post("/api/search", files={"image": ("a.jpg", normal)})
        assert fast.status_code == 200 and not slow.done()  # answered while the costly one runs
        searcher.release.set()
        assert slow.result(timeout=30).status_code == 200


# -- auth ----------------------------------------------------------------------------------------
def test_writes_need_the_token(client):
    writes = [
        ("PUT", "/api/images/img00/box", _box(0)),
        ("DELETE", "/api/images/img00/box?version=0", None),
        ("POST", "/api/triplets", {"reference": "img00", "positive": "img01", "negative": "img02"}),
        ("DELETE", "/api/triplets/1", None),
        (
            "POST",
            "/api/triplets/marks",
            {"reference": "img00", "same": [], "more": ["img01"], "less": ["img02"]},
        ),
        ("POST", "/api/auth/check", None),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, url, body in writes:
            r = client.request(method, url, json=body, headers=headers)
            _error(r, 401, "unauthorized")
    assert client.post("/api/auth/check", headers=AUTH).json() == {"annotator": "owner"}
    assert client.get("/api/images/img00/box").status_code == 404  # nothing was written
    assert client.get("/api/triplets").json() == {"triplets": []}


def test_token_from_environment_or_generated(workspace, searcher, monkeypatch):
    monkeypatch.setenv("TIEFJAX_TOKEN", "from-env")
    app = create_app(workspace, config=ServerConfig.tiny(), searcher=searcher)
    assert app.state.token == "from-env" and not app.state.token_generated
    monkeypatch.delenv("TIEFJAX_TOKEN")
    app = create_app(workspace, config=ServerConfig.tiny(), searcher=searcher)
    assert len(app.state.token) >= 20 and app.state.token_generated


# -- boxes ---------------------------------------------------------------------------------------
def _box(version: int, left: float = 1, right: float = 30) -> dict:
    return {"left": left, "top": 2, "right": right, "bottom": 40, "version": version}


def test_box_lifecycle_and_conflicts(client):
    url = "/api/images/img03/box"
    r = client.put(url, json=_box(0), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "image_id": "img03", "left": 1.0, "top": 2.0, "right": 30.0, "bottom": 40.0, "version": 1
    }  # fmt: skip
    assert client.get(url).json()["version"] == 1
    assert client.get("/api/images/img03").json()["box"]["version"] == 1
    # a second editor still holding version 0
    body = _error(client.put(url, json=_box(0, right=20), headers=AUTH), 409, "conflict")
    assert body["current"]["version"] == 1 and body["current"]["right"] == 30.0
    r = client.put(url, json=_box(1, right=25), headers=AUTH)
    assert r.json()["version"] == 2
    _error(client.delete(url, params={"version": 1}, headers=AUTH), 409)
    _error(client.delete(url, headers=AUTH), 400)
    assert client.delete(url, params={"version": 2}, headers=AUTH).status_code == 204
    _error(client.get(url), 404)
    body = _error(client.put(url, json=_box(2), headers=AUTH), 409)
    assert body["current"] is None


def test_box_validation(client):
    url = "/api/images/img04/box"  # 96 x 48
    body = _error(client.put(url, json=_box(0, right=500), headers=AUTH), 422, "invalid_input")
    assert "width" in body["error"]["message"]
    _error(client.put(url, json=_box(0, left=40, right=10), headers=AUTH), 422)
    _error(client.put(url, json={"left": 1, "top": 2}, headers=AUTH), 400)
    _error(client.put(url, json={**_box(0), "left": "a"}, headers=AUTH), 422)
    _error(client.put(url, json={**_box(0), "version": -1}, headers=AUTH), 400)
    _error(client.put(url, content=b"{not json", headers=AUTH), 400)
    _error(client.put(url, json=[1, 2, 3], headers=AUTH), 400)
    _error(client.put(url, content=b"[" * 100_000, headers=AUTH), 400)
    assert client.get(url).status_code == 404


_TRIPLET = b'{"reference": "img00", "positive": "img01", "negative": "img02"}'
_BOX = '{{"left": {}, "top": 2, "right": 30, "bottom": 40, "version": 0}}'


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/images/img00/thumb?size=\u00b2", None),  # '²'.isdigit() is True
        ("GET", "/api/images?limit=\u0663", None),  # int('٣') is 3
        ("GET", "/api/images?offset=99999999999999999999999", None),
        ("GET", "/api/images/img00/similar?k=+5", None),
        ("DELETE", "/api/images/img00/box?version=\u00b2", None),
        ("DELETE", "/api/images/img00/box?version=99999999999999999999", None),
        ("DELETE", "/api/triplets/99999999999999999999999", None),  # beyond SQLite's int64
        ("DELETE", "/api/triplets/\u00b2", None),
        ("PUT", "/api/images/img00/box", _BOX.format("1" + "0" * 400).encode()),
        ("PUT", "/api/images/img00/box", _BOX.format("1" + "0" * 5000).encode()),
        ("PUT", "/api/images/img00/box", _BOX.format("1e400").encode()),  # infinite as a float
        ("PUT", "/api/images/img00/box", _BOX.format("NaN").encode()),
        ("PUT", "/api/images/img00/box", b'{"left": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("PUT", "/api/images/img00/box", b'{"left": 1, "top": "\xff"}'),  # not UTF-8
        ("POST", "/api/triplets", _TRIPLET.replace(b'"img01"', b'"\\ud800"')),
        ("POST", "/api/triplets", _TRIPLET.replace(b'"img01"', b'"img\\n01"')),
        ("GET", "/api/triplets?reference=img%0A00", None),
        ("GET", "/api/images/img%0900", None),  # control characters are never an id
        ("GET", "/api/images/img%0000/similar", None),
    ],
)
def test_malformed_input_is_a_400(client, method, url, body):
    r = client.request(method, url, content=body, headers=AUTH)
    message = _error(r, 400, "bad_request")["error"]["message"]
    assert len(message) < 300 and "\n" not in message


def test_a_newline_in_a_path_matches_no_route(client):
    """Starlette's /api mount does not match across a newline: a JSON 404, not a 500."""
    _error(client.get("/api/images/img%0A00"), 404, "not_found")


def test_deep_json_in_a_string_is_just_a_string(client):
    """Brackets inside JSON strings do not count as nesting."""
    body = b'{"reference": "' + b"[" * 5000 + b'", "positive": "img01", "negative": "img02"}'
    _error(client.post("/api/triplets", content=body, headers=AUTH), 404)  # an unknown id


# -- triplets and candidates ---------------------------------------------------------------------
def test_triplets_and_candidates(client, ids):
    t = {"reference": "img00", "positive": "img01", "negative": "img02"}
    r = client.post("/api/triplets", json=t, headers=AUTH)
    assert r.status_code == 201
    created = r.json()
    assert {k: created[k] for k in t} == t and isinstance(created["id"], int)
    assert created["created_at"]
    assert client.post("/api/triplets", json=t, headers=AUTH).json()["id"] == created["id"]
    listed = client.get("/api/triplets", params={"reference": "img00"}).json()["triplets"]
    assert listed == [created]
    assert client.get("/api/triplets", params={"reference": "img01"}).json()["triplets"] == []

    cands = client.get("/api/candidates/img00", params={"k": 24}).json()
    assert cands["mode"] == "unsupervised"  # no supervised index: falls back, and says so
    got = [c["id"] for c in cands["candidates"]]
    assert sorted(got) == [i for i in ids if i not in ("img00", "img01", "img02")]
    assert len(client.get("/api/candidates/img00", params={"k": 1}).json()["candidates"]) == 1

    bad = {"reference": "img00", "positive": "img00", "negative": "img02"}
    _error(client.post("/api/triplets", json=bad, headers=AUTH), 422)
    _error(client.post("/api/triplets", json={**t, "negative": "nope"}, headers=AUTH), 404)
    _error(client.post("/api/triplets", json={"reference": "img00"}, headers=AUTH), 400)
    assert client.delete(f"/api/triplets/{created['id']}", headers=AUTH).status_code == 204
    _error(client.delete(f"/api/triplets/{created['id']}", headers=AUTH), 404)
    _error(client.delete("/api/triplets/abc", headers=AUTH), 400)
    assert client.get("/api/triplets").json()["triplets"] == []


def test_candidates_supervised(fake_client, ids):
    body = fake_client.get("/api/candidates/img00", params={"k": 2}).json()
    assert body["mode"] == "supervised" and [c["id"] for c in body["candidates"]] == ids[1:3]


# -- the site and traversal ----------------------------------------------------------------------
def test_site_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


def test_a_link_re_pointed_out_of_the_images_folder_is_not_served(tmp_path):
    """Registered as a link inside the folder, then re-pointed at a file outside it."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(_jpeg(40, 30))
    (images / "link.jpg").symlink_to(images / "a.jpg")
    init_workspace(tmp_path / "ws", images)
    (tmp_path / "secret.jpg").write_bytes(_jpeg(40, 30, seed=7))
    (images / "link.jpg").unlink()
    (images / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    app = create_app(tmp_path / "ws", token=TOKEN, config=ServerConfig.tiny(), searcher=None)
    with TestClient(app) as c:
        for url in ("/api/images/link/file", "/api/images/link/thumb?size=128"):
            message = _error(c.get(url), 403, "forbidden")["error"]["message"]
            assert "outside the images folder" in message and "secret" not in message
        assert c.get("/api/images/a/file").content == (images / "a.jpg").read_bytes()


@pytest.mark.parametrize(
    "url", ["/", "/js/app.js", "/api/stats", "/api/images/img00/file", "/api/nope", "/nope"]
)
def test_security_headers_on_every_response(client, url):
    r = client.get(url)
    assert r.headers["x-content-type-options"] == "nosniff"
    policy = dict(
        part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
    )
    assert policy["frame-ancestors"] == "'none'" and policy["default-src"] == "'self'"
    assert policy["object-src"] == "'none'" and "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "path",
    [
        "/%2e%2e/%2e%2e/pyproject.toml",
        "/..%2f..%2fpyproject.toml",
        "/js/%2e%2e/%2e%2e/pyproject.toml",
        "/%2e%2e/tiefjax/server/app.py",
        "/..%5c..%5cpyproject.toml",
        "/api/images/..%2f..%2fpyproject.toml/file",
        "/api/images/%2e%2e/file",
        "/api/images/..%2Fws%2Ftiefjax.sqlite/file",
    ],
)
def test_path_traversal_is_refused(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert b"[project]" not in r.content and b"SQLite" not in r.content


def test_raw_dotdot_paths_are_refused(workspace, searcher):
    """Paths with literal '..' (which HTTP clients normalise away) sent straight to the app."""
    import asyncio

    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)

    async def get(path: str) -> tuple[int, bytes]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "root_path": "",
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "http_version": "1.1",
            "app": app,
        }
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    for path in ("/../pyproject.toml", "/js/../../pyproject.toml", "/../../../../etc/passwd"):
        status, body = asyncio.run(get(path))
        assert status == 404 and b"[project]" not in body and b"root:" not in body


# -- concurrency ---------------------------------------------------------------------------------
def test_sixteen_parallel_editors(client, ids):
    """16 editors save boxes and triplets at once: every save lands or gets a 409, none is lost."""
    targets = ids[:4]
    barrier = threading.Barrier(16)
    results: list[tuple[str, int, int, dict]] = []
    lock = threading.Lock()

    def editor(n: int) -> None:
        image_id = targets[n % len(targets)]
        url = f"/api/images/{image_id}/box"
        barrier.wait()
        for _attempt in range(20):
            current = client.get(url)
            version = current.json()["version"] if current.status_code == 200 else 0
            r = client.put(url, json=_box(version, right=10 + n), headers=AUTH)
            with lock:
                results.append((image_id, n, r.status_code, r.json()))
            if r.status_code == 200:
                break
            assert r.status_code == 409 and "current" in r.json()
        ref, pos = ids[n % len(ids)], ids[(n + 1) % len(ids)]
        neg = ids[(n + 2 + n // len(ids)) % len(ids)]
        if neg in (ref, pos):
            neg = ids[(n + 3) % len(ids)]
        r = client.post(
            "/api/triplets", json={"reference": ref, "positive": pos, "negative": neg}, headers=AUTH
        )
        assert r.status_code == 201, r.text

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(editor, range(16)))

    saved = [(i, n, body) for i, n, code, body in results if code == 200]
    assert len(saved) == 16  # every editor eventually saved
    for image_id in targets:
        mine = sorted(body["version"] for i, _, body in saved if i == image_id)
        # versions are dense: every successful save was a new version, no update was lost
        assert mine == list(range(mine[0], mine[0] + len(mine)))
        final = client.get(f"/api/images/{image_id}/box").json()
        assert final["version"] == mine[-1]
    conflicts = [r for r in results if r[2] == 409]
    assert all(r[3]["error"]["code"] == "conflict" for r in conflicts)
    stored = client.get("/api/triplets").json()["triplets"]
    assert len({(t["reference"], t["positive"], t["negative"]) for t in stored}) == len(stored)
    assert client.get("/api/health").status_code == 200


def test_concurrent_uploads_real_searcher(workspace, real_searcher):
    config = ServerConfig(batch_max=8, batch_wait_ms=30, reload_check_s=60)
    app = create_app(workspace, token=TOKEN, config=config, searcher=real_searcher)
    photos = [_jpeg(60, 50, seed=100 + i) for i in range(6)]
    with TestClient(app) as c:
        alone = [
            c.post("/api/search", params={"k": 3}, files={"image": ("a", p)}).json()["hits"]
            for p in photos
        ]

        def one(p):
            return c.post("/api/search", params={"k": 3}, files={"image": ("a", p)})

        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(one, photos))
        batches = app.state.tiefjax.batcher.batch_sizes
    assert [r.status_code for r in together] == [200] * 6
    for a, b in zip(alone, together, strict=True):
        assert [h["id"] for h in a] == [h["id"] for h in b.json()["hits"]]
        assert np.allclose(
            [h["score"] for h in a], [h["score"] for h in b.json()["hits"]], atol=1e-4
        )
    assert max(batches) > 1


def test_rebuilt_index_is_picked_up_without_restart(workspace):
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny())  # loads the index itself
    with TestClient(app) as c:
        before = c.get("/api/stats").json()["index"]["built_at"]
        time.sleep(1.1)  # built_at has one-second resolution
        build_index(workspace, IndexConfig.tiny(), progress=False, log=lambda msg: None)
        deadline = time.time() + 20
        after = before
        while after == before and time.time() < deadline:
            time.sleep(0.05)
            after = c.get("/api/stats").json()["index"]["built_at"]
        assert after != before
        assert c.get("/api/images/img00/similar").status_code == 200


def test_serve_command_binds_localhost_and_prints_url_and_token(workspace, monkeypatch, capsys):
    from tiefjax.cli import main
    from tiefjax.server import listen

    calls = []

    class Listening:  # stands in for uvicorn: "binds" and says so at once
        def __init__(self, app, host, port, config, ready):
            calls.append((app, {"host": host, "port": port}))
            self.run = lambda: ready(f"http://{host}:{port}/")

    monkeypatch.setattr(listen, "make_server", Listening)
    monkeypatch.delenv("TIEFJAX_TOKEN", raising=False)
    assert main(["serve", str(workspace.root), "--port", "8123"]) == 0
    app, kw = calls[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    out = capsys.readouterr().out
    assert "ready: http://127.0.0.1:8123/" in out and app.state.token in out
    assert main(["serve", str(workspace.root), "--token", "abc", "--host", "0.0.0.0"]) == 0
    assert calls[1][0].state.token == "abc" and calls[1][1]["host"] == "0.0.0.0"
    assert main(["serve", str(workspace.root / "nope")]) == 2  # not a workspace: one-line error


def test_stats_carry_the_builds_recall_warnings(workspace, ids):
    searcher = FakeSearcher(ids)
    searcher.info["warnings"] = ["unsupervised: recall@10 0.900 < 0.95; raise [index] dim"]
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as c:
        index = c.get("/api/stats").json()["index"]
    assert index["warnings"] == searcher.info["warnings"]
