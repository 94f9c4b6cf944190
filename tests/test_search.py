"""Searcher: ids, files, bytes, PIL; self-exclusion; neighbours; reload; errors; supervised."""

from __future__ import annotations

import io
import threading

import numpy as np
import orjson
import pytest
from _index_fakes import FakeEncoder, make_catalog, make_workspace, photo
from PIL import Image

from tiefjax.catalog import init_workspace
from tiefjax.errors import InvalidInput, NotFound
from tiefjax.hit_members import BOX_KEYS
from tiefjax.images import content_box
from tiefjax.index import build as build_mod
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.search import Hit, Searcher
from tiefjax.server.app import hits_json, similar_body

CFG = IndexConfig.tiny()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    ws, images = make_workspace(tmp, 10)
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    return ws, images


@pytest.fixture()
def searcher(built):
    return Searcher.load(built[0], CFG, encoder=FakeEncoder())


def test_lazy_export_and_info(built, searcher):
    import tiefjax

    assert tiefjax.Searcher is Searcher
    assert searcher.ids == tuple(f"p{i:03d}" for i in range(10))
    assert searcher.ids is searcher.ids  # shared, not an O(N) copy per call
    assert searcher.built_at and searcher.modes == ["unsupervised"]
    info = searcher.info
    assert info["images"] == 10 and info["modes"]["unsupervised"]["recall_at_10"] >= 0.95
    assert info["stale"] is None


def test_search_by_id_excludes_self_unless_asked(searcher):
    res = searcher.search("p003", k=4)
    assert res.query_id == "p003" and len(res.hits) == 4
    assert "p003" not in [h.id for h in res.hits]
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)
    mine = searcher.search("p003", k=4, include_self=True)
    assert mine.hits[0] == Hit("p003", pytest.approx(1.0, abs=1e-4))
    assert mine.hits[1:] == res.hits[:3]
    assert searcher.neighbours("p003", 4) == [
        Hit(h.id, pytest.approx(h.score, abs=1e-5)) for h in res.hits
    ]
    assert len(searcher.search("p003", k=50).hits) == 9  # k above the catalog size
    # every hit knows its row in the index, so its box is read without an id lookup
    hits = [*res.hits, *searcher.neighbours("p003", 4)]
    assert all(searcher.ids[h.row] == h.id for h in hits)
    rows = [searcher.row(h.id) for h in hits]
    assert [orjson.loads(b"{%b}" % m) for m in searcher.indexed_json(hits)] == [
        {"id": r.id, "box": dict(zip(BOX_KEYS, r.box, strict=True)), "box_source": r.source}
        for r in rows
    ]
    # a hit of another build (the index was rebuilt since) is looked up by its id
    stale = [Hit("p003", 0.5, 0, "an-older-build"), Hit("gone", 0.4, 1, "an-older-build")]
    first, gone = searcher.indexed_json(stale)
    assert orjson.loads(b"{%b}" % first)["box"] == dict(
        zip(BOX_KEYS, searcher.row("p003").box, strict=True)
    )
    assert gone is None
    # the similar-by-id answer's form: the same hits, scores and members, without Hit objects
    scores, members = searcher.neighbour_members("p003", 4)
    assert scores == [h.score for h in searcher.neighbours("p003", 4)]
    assert members == searcher.indexed_json(searcher.neighbours("p003", 4))
    scores, members = searcher.neighbour_members("p003", 50)  # more than the lists hold
    assert len(scores) == len(members) == 9
    answer = orjson.loads(similar_body(searcher, "p003", 4, "unsupervised"))
    assert answer == {
        "id": "p003",
        "mode": "unsupervised",
        "hits": hits_json(searcher.neighbours("p003", 4), searcher),
    }


def test_similar_past_the_precomputed_lists_searches(tmp_path, monkeypatch):
    ws, _ = make_workspace(tmp_path, 8)
    cfg = IndexConfig.tiny().with_(neighbours_k=3)
    build_index(ws, cfg, encoder=FakeEncoder(), locator=None, progress=False)
    searcher = Searcher.load(ws, cfg, encoder=FakeEncoder())
    answer = orjson.loads(similar_body(searcher, "p002", 5, "unsupervised"))  # 5 > the 3 kept
    expected = hits_json(searcher.search("p002", 5).hits, searcher)
    assert answer["hits"] == expected and len(expected) == 5
    # a hit whose image left the index between the search and reading its row is left out,
    # with its score (the answer's lists stay paired)
    indexed = searcher.indexed_json
    monkeypatch.setattr(searcher, "indexed_json", lambda hits: [None, *indexed(hits)[1:]])
    scores, members = searcher.neighbour_members("p002", 5)
    assert len(scores) == len(members) == 4
    assert [orjson.loads(b"{%b}" % m)["id"] for m in members] == [h["id"] for h in expected[1:]]
    assert scores == [h["score"] for h in expected[1:]]


def test_file_bytes_and_pil_queries(built, searcher):
    _, images = built
    by_id = searcher.search("p002", k=3)
    path = images / "p002.jpg"
    assert searcher.search(path, k=3) == by_id  # same content: recognised as the catalog image
    assert searcher.search(str(path), k=3) == by_id
    assert searcher.search(path.read_bytes(), k=3) == by_id
    assert searcher.search(Image.open(path), k=3) == by_id
    # a new photo, not in the catalog: encoded
    new = photo(2).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    res = searcher.search(new, k=3)
    assert res.query_id is None and res.box_source == "whole" and len(res.hits) == 3
    # the whole photo with its plain background trimmed ([index] trim_borders, the default)
    assert res.box == pytest.approx(content_box(new)) and res.box != (0.0, 0.0, 96.0, 72.0)
    assert res.fallback and res.probability is None
    # a copy of a catalog photo under another name, re-encoded from pixels: itself first
    copied = searcher.search(Image.open(path).convert("RGB"), k=2)
    assert copied.hits[0].id == "p002" and copied.hits[0].score > 0.99


def test_a_big_jpeg_query_decodes_small_and_answers_in_its_own_pixels(built, searcher):
    _, images = built
    big = Image.open(images / "p002.jpg").resize((1920, 1440), Image.Resampling.BICUBIC)
    data = io.BytesIO()
    big.save(data, "JPEG", quality=92)
    prepared = searcher.prepare(data.getvalue())
    assert prepared.image.size == (960, 720) and prepared.scale == (2.0, 2.0)  # draft mode
    res = searcher.search(data.getvalue(), k=2)
    # the upload's pixels, not the decoded ones: the trimmed box found at 960x720, times two
    assert res.box == pytest.approx(tuple(2 * v for v in content_box(prepared.image)))
    assert res.box[2] > 960 or res.box[3] > 720
    assert res.hits[0].id == "p002" and res.hits[0].score > 0.95


def test_search_many_one_batch_and_errors_in_place(built, searcher):
    _, images = built
    enc = searcher._get_encoder()
    before = enc.calls
    queries = ["p001", photo(3), b"not an image", "nope", images / "missing.jpg", photo(4)]
    out = searcher.search_many(queries, k=2, errors="return")
    assert enc.calls == before + 1  # both photos in one encoder call (batch 4)
    assert out[0].query_id == "p001" and out[1].query_id is None and out[5].hits
    assert isinstance(out[2], InvalidInput) and "not a readable image" in str(out[2])
    assert isinstance(out[3], NotFound) and "nope" in str(out[3])
    assert isinstance(out[4], InvalidInput) and "missing.jpg" in str(out[4])
    with pytest.raises(InvalidInput, match="not a readable image"):  # the first bad one
        searcher.search_many(queries, k=2)


def test_bad_input_errors(built, searcher, tmp_path):
    with pytest.raises(NotFound, match="no image with id 'zzz'"):
        searcher.search("zzz")
    with pytest.raises(NotFound):
        searcher.neighbours("zzz")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 garbage")
    with pytest.raises(InvalidInput, match="bad.jpg"):
        searcher.search(bad)
    with pytest.raises(InvalidInput, match="no such image file"):
        searcher.search(tmp_path / "none.png")
    with pytest.raises(InvalidInput, match="empty"):
        searcher.search(b"")
    with pytest.raises(InvalidInput, match="mode"):
        searcher.search("p001", mode="fuzzy")
    with pytest.raises(InvalidInput, match="k must be"):
        searcher.search("p001", k=0)
    with pytest.raises(InvalidInput):
        searcher.search(12345)
    with pytest.raises(NotFound, match="tiefjax train .* ranking"):
        searcher.search("p001", mode="supervised")


def test_query_before_any_index(tmp_path):
    ws, _ = make_workspace(tmp_path, 2)
    with pytest.raises(NotFound, match="tiefjax index"):
        Searcher.load(ws)
    with pytest.raises(NotFound, match="not a tiefjax workspace"):
        Searcher.load(tmp_path / "nowhere")


def test_thread_safe_concurrent_searches(searcher):
    want = {i: searcher.search(photo(i), k=3) for i in range(4)}
    got: dict[int, object] = {}

    def work(i):
        got[i] = searcher.search_many([photo(i)], k=3)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_reload_and_incremental_reindex(tmp_path):
    ws, images = make_workspace(tmp_path, 5)
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    s = Searcher.load(ws, CFG, encoder=FakeEncoder())
    assert not s.reload_if_changed()
    (images / "p004.jpg").unlink()
    make_catalog(images, 1, start=20)
    init_workspace(ws.root, images)
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    assert s.reload_if_changed()
    assert "p020" in s.ids and "p004" not in s.ids
    assert s.search("p020", k=2).query_id == "p020"
    with pytest.raises(NotFound):
        s.search("p004")


class _Trained:
    """A ranking net at its identity initialisation (what train would start from)."""

    def __init__(self):
        import jax

        from tiefjax.nets.heads import RankingNet

        self.head = RankingNet()
        fmap = np.zeros((1, 11, 11, 256), np.float32)
        self.params = self.head.init(jax.random.PRNGKey(0), fmap)["params"]
        self.encoder_params = None
        self.meta = {"task": "ranking"}


def test_supervised_mode_with_identity_ranking_net(tmp_path, monkeypatch):
    trained = _Trained()
    monkeypatch.setattr(build_mod, "load_ranking", lambda ws: trained)
    monkeypatch.setattr("tiefjax.search.load_ranking", lambda ws: trained)
    ws, _ = make_workspace(tmp_path, 8)
    report = build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    assert set(report.modes) == {"unsupervised", "supervised"}
    s = Searcher.load(ws, CFG, encoder=FakeEncoder())
    assert s.modes == ["unsupervised", "supervised"]
    for q in ("p001", photo(5).rotate(3)):
        sup = s.search(q, k=4, mode="supervised")
        uns = s.search(q, k=4, mode="unsupervised")
        assert [h.id for h in sup.hits] == [h.id for h in uns.hits]  # identity net = same order
        np.testing.assert_allclose(
            [h.score for h in sup.hits], [h.score for h in uns.hits], atol=2e-3
        )
    both = s.search_modes([photo(6)], k=3, modes=("unsupervised", "supervised"))[0]
    assert set(both) == {"unsupervised", "supervised"}
    assert len(s.neighbours("p002", 3, mode="supervised")) == 3


def test_cli_search_and_index(built, capsys):
    from tiefjax.cli import main

    ws, _ = built
    assert main(["search", str(ws.root), "p001", "-k", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"query_id": "p001"' in out
    assert main(["search", str(ws.root), "nope"]) == 2
    assert "no image with id" in capsys.readouterr().err


def test_cli_index(tmp_path, capsys, monkeypatch):
    from tiefjax.cli import main

    ws, _ = make_workspace(tmp_path, 4)
    monkeypatch.setattr(
        "tiefjax.index.encode.load_feature_encoder", lambda ws, batch_size=32: FakeEncoder()
    )
    assert main(["index", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "indexed 4 image(s)" in out and "recall@10" in out and "tiefjax train" in out
    assert main(["index", str(ws.root), "--json"]) == 0
    assert '"reused": 4' in capsys.readouterr().out
