"""The static export: layout, JSON shapes equal to the API's, atomic replacement."""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import pytest
from _server_fakes import FakeSearcher, _jpeg, _png
from PIL import Image
from starlette.testclient import TestClient

from tiefjax.catalog import init_workspace
from tiefjax.errors import InvalidInput
from tiefjax.export_site import export_site, read_data, shard_digits, shard_of, static_key
from tiefjax.server import ServerConfig, create_app
from tiefjax.store import Store
from tiefjax.workspace import Workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("exp")
    images = root / "images"
    images.mkdir()
    for i in range(5):
        (images / f"p{i}.jpg").write_bytes(_jpeg(60 + i, 50, seed=i))
    (images / "odd name%?.png").write_bytes(_png(40, 30))
    init_workspace(root / "ws", images)
    ws = Workspace(root / "ws")
    with Store(ws.store_path) as store:
        store.put_box("p1", (1, 2, 30, 40), 0)
    return ws


def test_layout_and_shapes_match_the_api(ws, tmp_path):
    with Store(ws.store_path) as store:
        ids = store.image_ids()
    searcher = FakeSearcher(ids)
    out = tmp_path / "site-out"
    report = export_site(ws, out, searcher=searcher, page_size=4, k=3)
    assert report.images == len(ids) and report.pages == 2 and not report.skipped
    assert (out / "index.html").is_file()
    static = out / "static"
    manifest = read_data(static / "manifest.js")
    assert manifest == {
        "static": True, "total": len(ids), "page_size": 4,
        "modes": ["unsupervised", "supervised"], "k": 3, "shard_digits": 1,
    }  # fmt: skip
    assert "6 images in 2 pages" in report.summary() and report.files > 6 and report.bytes > 0
    assert not list(static.rglob("*.json"))  # one copy of the data: scripts, no JSON twins

    app = create_app(ws, token="t", config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as api:
        for n in range(2):
            page = read_data(static / "pages" / f"{n}.js")
            assert page == api.get("/api/images", params={"offset": 4 * n, "limit": 4}).json()
        stats = read_data(static / "stats.js")
        live = api.get("/api/stats").json()
        assert stats.keys() == live.keys() and stats["images"] == live["images"] == len(ids)
        assert stats["boxes"] == 1 and stats["index"]["modes"] == live["index"]["modes"]
        for image_id in ids:  # each in the shard of its key
            path = f"{shard_of(static_key(image_id), 1)}.js"
            got = read_data(static / "records" / path)[image_id]
            assert got == api.get(f"/api/images/{quote(image_id, safe='')}").json()
            for mode in ("unsupervised", "supervised"):
                got = read_data(static / "similar" / mode / path)[image_id]
                want = api.get(
                    f"/api/images/{quote(image_id, safe='')}/similar",
                    params={"mode": mode, "k": 3},
                ).json()
                assert got == want
    for image_id in ids:
        key = static_key(image_id)
        with Image.open(static / "images" / f"{key}.jpg") as img:
            assert img.format == "JPEG"
        with Image.open(static / "thumbs" / f"{key}.jpg") as img:
            assert img.format == "JPEG" and max(img.size) <= 256
    assert static_key("odd name%?") == "62d777994dcaaac9"
    assert (static / "images" / "62d777994dcaaac9.jpg").is_file()
    assert not list(tmp_path.glob(".site-out*"))  # no temporary folders left


def test_stats_carry_the_index_staleness_as_the_api_does(ws, tmp_path):
    """An index built before two photos were added (and holding one since removed): the
    export's stats say so, in the words of /api/stats."""
    with Store(ws.store_path) as store:
        ids = store.image_ids()
    searcher = FakeSearcher([*ids[:-2], "gone"])
    export_site(ws, tmp_path / "out", searcher=searcher)
    stale = read_data(tmp_path / "out" / "static" / "stats.js")["index"]["stale"]
    assert stale.startswith(
        f"the index is out of date: 2 of the {len(ids)} catalogued images are not in it and 1 "
        "images in it were removed from the catalog"
    )
    app = create_app(ws, token="t", config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as api:
        assert api.get("/api/stats").json()["index"]["stale"] == stale


def test_static_key_is_fnv1a_64_in_hex():
    """Published FNV-1a 64 test vectors: site/js/api.js computes the same function."""
    assert static_key("") == "cbf29ce484222325"
    assert static_key("a") == "af63dc4c8601ec8c"
    assert static_key("foobar") == "85944171f73967e8"
    assert static_key("\u00e9" * 100) == "b1c912a8e533f4b5"  # 200 bytes of UTF-8


def test_long_ids_export_under_short_file_names(tmp_path):
    """A photo named with 100 x 'é' (200 bytes, legal) made a 600-byte percent-encoded name."""
    images = tmp_path / "images"
    images.mkdir()
    long_id = "\u00e9" * 100
    (images / f"{long_id}.jpg").write_bytes(_jpeg(60, 50))
    (images / "short.jpg").write_bytes(_jpeg(50, 60, seed=1))
    init_workspace(tmp_path / "ws", images)
    out = tmp_path / "out"
    report = export_site(Workspace(tmp_path / "ws"), out, searcher=FakeSearcher([long_id, "short"]))
    assert report.images == 2 and not report.skipped
    static = out / "static"
    key = static_key(long_id)
    similar = f"similar/supervised/{shard_of(key, 1)}.js"
    for path in (f"images/{key}.jpg", f"thumbs/{key}.jpg", similar):
        assert (static / path).is_file(), path
    shard = read_data(static / "similar" / "unsupervised" / f"{shard_of(key, 1)}.js")
    assert shard[long_id]["id"] == long_id and shard[long_id]["hits"][0]["id"] == "short"
    assert max(len(p.name.encode()) for p in out.rglob("*")) < 64


def test_shards_stay_small_however_large_the_catalog():
    """About 64 images a shard at most on average: a 100k-image export reads one ~24-image
    file for an image's page, not the catalog."""
    assert [shard_digits(n) for n in (0, 6, 1024, 1025, 100_000, 10**6, 10**7)] == [
        1, 1, 1, 2, 3, 4, 5,
    ]  # fmt: skip
    for n in (1025, 100_000, 10**6, 10**7):
        assert n / 16 ** shard_digits(n) <= 64 < n / 16 ** (shard_digits(n) - 1)
    # ids that differ only in their last characters still spread evenly (FNV-1a's own leading
    # digits would put 10,000 of them in a handful of the 256 shards)
    sizes = Counter(shard_of(static_key(f"img-{i:08d}"), 2) for i in range(10_000))
    assert len(sizes) == 256 and max(sizes.values()) < 2 * 10_000 / 256
    assert shard_of("cbf29ce484222325", 3) == "efd"  # pinned: site/js/api.js computes the same


def test_ids_sharing_a_file_name_are_refused(ws, tmp_path, monkeypatch):
    import tiefjax.export_site as export_module

    monkeypatch.setattr(export_module, "static_key", lambda image_id: "same")
    with pytest.raises(InvalidInput, match="would share the export file name same"):
        export_site(ws, tmp_path / "out", searcher=FakeSearcher(["p0"]))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_without_an_index(ws, tmp_path, monkeypatch):
    import tiefjax.search as search_module

    def no_index(_ws):
        from tiefjax.errors import NotFound

        raise NotFound("no index")

    monkeypatch.setattr(search_module.Searcher, "load", staticmethod(no_index))
    out = tmp_path / "plain"
    report = export_site(ws, out)
    manifest = read_data(out / "static" / "manifest.js")
    assert manifest["modes"] == [] and report.modes == []
    assert not (out / "static" / "similar").exists()
    assert read_data(out / "static" / "stats.js")["index"] is None


def test_replaces_an_earlier_export_and_refuses_other_folders(ws, tmp_path):
    with Store(ws.store_path) as store:
        searcher = FakeSearcher(store.image_ids())
    out = tmp_path / "out"
    export_site(ws, out, searcher=searcher)
    (out / "static" / "stale.txt").write_text("old")
    export_site(ws, out, searcher=searcher)
    assert not (out / "static" / "stale.txt").exists()
    assert (out / "static" / "manifest.js").is_file()
    older = tmp_path / "older"  # an export made when data files were JSON twins
    (older / "static").mkdir(parents=True)
    (older / "static" / "manifest.json").write_text('{"static": true}')
    export_site(ws, older, searcher=searcher)
    assert read_data(older / "static" / "manifest.js")["static"] is True
    assert not (older / "static" / "manifest.json").exists()

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(InvalidInput):
        export_site(ws, precious, searcher=searcher)
    assert (precious / "thesis.tex").read_text() == "keep me"
    with pytest.raises(InvalidInput):
        export_site(ws, ws.root, searcher=searcher)


def test_failure_leaves_the_earlier_export(ws, tmp_path):
    with Store(ws.store_path) as store:
        searcher = FakeSearcher(store.image_ids())
    out = tmp_path / "out"
    export_site(ws, out, searcher=searcher)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    class Broken(FakeSearcher):
        def neighbours(self, image_id, k, mode):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        export_site(ws, out, searcher=Broken(searcher.ids))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob(".out.*"))


def test_command_line(ws, tmp_path, capsys):
    from tiefjax.cli import main

    out = tmp_path / "cli-out"
    assert main(["export-site", str(ws.root), str(out), "--page-size", "2"]) == 0
    assert "exported 6 images in 3 pages" in capsys.readouterr().out
    assert read_data(out / "static" / "manifest.js")["page_size"] == 2
    assert main(["export-site", str(ws.root), str(out), "--k", "0"]) == 2
