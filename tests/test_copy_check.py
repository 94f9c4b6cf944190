"""Copy check: masked NCC against a direct reference, copies against their siblings, and the
searcher listing an upload's source first."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _index_fakes import FakeEncoder, make_workspace
from PIL import Image, ImageDraw

from tiefjax import copy_check as cc
from tiefjax.augment import TRANSFORMS, copy_of
from tiefjax.errors import InvalidInput
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.search import Searcher


def reference_ncc(query: cc.View, photo: cc.View, dy: int, dx: int) -> float:
    """Masked NCC of ``query`` with its top-left corner at (dy, dx) in ``photo``, summed over
    channels, straight from the definition (-1 where the overlap is too small or flat)."""
    (b, bm), (a, am) = query, photo
    h, w = bm.shape
    H, W = am.shape
    y0, x0 = max(0, -dy), max(0, -dx)
    y1, x1 = min(h, H - dy), min(w, W - dx)
    if y1 <= y0 or x1 <= x0:
        return -1.0
    both = bm[y0:y1, x0:x1] * am[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
    n = both.sum()
    if n < cc.MIN_OVERLAP * min(bm.sum(), am.sum()) or n < cc.MIN_SHARE * max(bm.sum(), am.sum()):
        return -1.0
    qb = b[y0:y1, x0:x1][both > 0].astype(np.float64)
    pa = a[y0 + dy : y1 + dy, x0 + dx : x1 + dx][both > 0].astype(np.float64)
    qb, pa = qb - qb.mean(0), pa - pa.mean(0)
    var_a, var_b = (pa * pa).sum(), (qb * qb).sum()
    if var_a <= 3 * n or var_b <= 3 * n:
        return -1.0
    return float((pa * qb).sum() / np.sqrt(var_a * var_b))


def random_view(rng, shape, channels, holes=False) -> cc.View:
    pixels = rng.uniform(0, 255, (*shape, channels)).astype(np.float32)
    mask = np.ones(shape, np.float32)
    if holes:
        mask[: shape[0] // 3, : shape[1] // 4] = 0
    return pixels, mask


def test_every_shift_and_near_shift_ncc_match_the_definition():
    rng = np.random.default_rng(0)
    photos = [random_view(rng, (9, 7), 3), random_view(rng, (6, 8), 3)]
    queries = [random_view(rng, (7, 6), 3), random_view(rng, (10, 9), 3, holes=True)]
    # a query that is a noisy piece of photo 0 at (1, 1): its true place must win
    piece = photos[0][0][1:8, 1:7] + rng.normal(0, 5, (7, 6, 3)).astype(np.float32)
    queries.append((piece, np.ones((7, 6), np.float32)))
    pairs = [(q, k) for q in range(3) for k in range(2)]
    scores, shifts = cc._ncc_every_shift(queries, photos, pairs)
    for (q, k), score, (dy, dx) in zip(pairs, scores, shifts, strict=True):
        h, w = queries[q][1].shape
        H, W = photos[k][1].shape
        every = {
            (y, x): reference_ncc(queries[q], photos[k], y, x)
            for y in range(-h + 1, H)
            for x in range(-w + 1, W)
        }
        assert score == pytest.approx(max(every.values()), abs=1e-4)
        assert every[dy, dx] == pytest.approx(score, abs=1e-4)
        near = cc._ncc_near(cc._centred(queries[q]), cc._centred(photos[k]), (dy - 1, dx + 1), 2)
        rows, cols = range(dy - 3, dy + 2), range(dx - 1, dx + 4)
        window = [every.get((y, x), -1.0) for y in rows for x in cols]
        assert near == pytest.approx(max(window), abs=1e-4)
    assert shifts[4] == (1, 1) and scores[4] > 0.99


def garment_photo(background: int, place: tuple[int, int], size=(300, 400)) -> Image.Image:
    """A striped dress shape on a textured backdrop: ``background`` seeds the backdrop,
    ``place`` is where the dress stands (the same dress in every photo)."""
    rng = np.random.default_rng(background)
    coarse = rng.integers(60, 230, (size[1] // 40 + 2, size[0] // 40 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    stripes = Image.new("RGB", (150, 260), (30, 40, 120))
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 150, 16):
        draw.rectangle((x, 0, x + 7, 260), fill=(120, 180, 240))
    shape = Image.new("L", (150, 260), 0)
    ImageDraw.Draw(shape).polygon([(45, 0), (105, 0), (150, 260), (0, 260)], fill=255)
    img.paste(stripes, place, shape)
    return img


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_a_copy_aligns_with_its_source_and_not_with_its_siblings(transform):
    source = garment_photo(1, (70, 80))
    siblings = [garment_photo(2, (70, 80)), garment_photo(1, (110, 60))]
    photos = [cc.catalog_photo(p, max(p.size)) for p in [source, *siblings]]
    for seed in range(3):
        copy = copy_of(source, transform, (seed, 7))
        scores = cc.copy_scores(copy, 1.0, photos)
        assert scores[0] >= IndexConfig().copy_threshold, (transform, seed, scores)
        assert scores[0] > max(scores[1:]), (transform, seed, scores)


def test_a_copy_decoded_smaller_still_aligns_at_its_pixel_scale():
    source = garment_photo(3, (60, 90))
    copy = copy_of(source, "pad_plain", (0, 1))
    half = copy.reduce(2)  # as a JPEG drafted at 1/2: two original pixels per decoded pixel
    scores = cc.copy_scores(half, 2.0, [cc.catalog_photo(source, 400), None])
    assert scores[0] >= IndexConfig().copy_threshold and scores[1] is None


def test_settings_are_checked():
    with pytest.raises(InvalidInput, match="copy_threshold"):
        IndexConfig(copy_threshold=1.5)
    with pytest.raises(InvalidInput, match="copy_check_hits"):
        IndexConfig(copy_check_hits=0)


@pytest.fixture(scope="module")
def garments(tmp_path_factory):
    """A catalog of four photos of one dress on different backdrops and places, indexed."""
    tmp = tmp_path_factory.mktemp("copycheck")
    ws, images = make_workspace(tmp, 4)
    for i, (bg, place) in enumerate([(1, (70, 80)), (2, (70, 80)), (1, (110, 60)), (4, (90, 70))]):
        garment_photo(bg, place).save(images / f"p{i:03d}.jpg", quality=92)
    from tiefjax.catalog import init_workspace

    init_workspace(ws.root, images)
    build_index(ws, IndexConfig.tiny(), encoder=FakeEncoder(), locator=None, progress=False)
    return ws, images


@pytest.mark.parametrize("transform", ["pad_textured", "crop", "rotate", "colour"])
def test_search_lists_an_uploads_source_first(garments, transform):
    ws, images = garments
    source = Image.open(images / "p002.jpg").convert("RGB")
    buf = io.BytesIO()
    copy_of(source, transform, (0, 3)).save(buf, "JPEG", quality=95)
    cfg = IndexConfig.tiny()
    plain = Searcher.load(ws, cfg.with_(copy_check=False), encoder=FakeEncoder())
    checked = Searcher.load(ws, cfg, encoder=FakeEncoder())
    before = plain.search(buf.getvalue(), k=4)
    after = checked.search(buf.getvalue(), k=4)
    assert before.copy_of is None and before.copy_score is None
    assert after.copy_of == "p002" and after.hits[0].id == "p002"
    assert after.copy_score is not None and after.copy_score >= cfg.copy_threshold
    assert after.to_json()["copy_of"] == "p002"
    # the same hits; only the source moved to the front
    assert sorted(h.id for h in after.hits) == sorted(h.id for h in before.hits)
    rest = [h for h in before.hits if h.id != "p002"]
    assert after.hits[1:] == rest


def test_a_missing_catalog_file_is_left_to_the_descriptor(garments, tmp_path):
    ws, images = garments
    copy = copy_of(Image.open(images / "p001.jpg").convert("RGB"), "pad_plain", (0, 5))
    buf = io.BytesIO()
    copy.save(buf, "PNG")
    searcher = Searcher.load(ws, IndexConfig.tiny(), encoder=FakeEncoder())
    assert searcher.search(buf.getvalue()).copy_of == "p001"  # the control: found with its file
    moved = tmp_path / "p001.jpg"
    (images / "p001.jpg").rename(moved)
    try:
        gone = Searcher.load(ws, IndexConfig.tiny(), encoder=FakeEncoder()).search(buf.getvalue())
    finally:
        moved.rename(images / "p001.jpg")
    assert gone.copy_of != "p001" and "p001" in [h.id for h in gone.hits]
    # the file is back: a searcher that missed it aligns it again (nothing stale was kept)
    assert searcher.search(buf.getvalue()).copy_of == "p001"


def test_the_check_sees_its_hits_whatever_k_is(garments):
    ws, images = garments
    cfg = IndexConfig.tiny()
    plain = Searcher.load(ws, cfg.with_(copy_check=False), encoder=FakeEncoder())
    checked = Searcher.load(ws, cfg, encoder=FakeEncoder())
    behind = []  # copies whose source the descriptor alone does not put first
    for i in range(4):
        source = Image.open(images / f"p{i:03d}.jpg").convert("RGB")
        for name in ("pad_textured", "crop", "rotate", "pad_plain"):
            data = io.BytesIO()
            copy_of(source, name, (1, i)).save(data, "JPEG", quality=95)
            if plain.search(data.getvalue(), k=4).hits[0].id != f"p{i:03d}":
                behind.append((f"p{i:03d}", data.getvalue()))
    assert behind, "every source came first without the check: nothing to show"
    for source_id, data in behind:
        res = checked.search(data, k=1)
        assert [h.id for h in res.hits] == [source_id] and res.copy_of == source_id


def test_a_failing_check_keeps_the_descriptors_order(garments, monkeypatch, caplog):
    import tiefjax.search as search_mod

    ws, images = garments
    data = io.BytesIO()
    copy_of(Image.open(images / "p002.jpg").convert("RGB"), "crop", (0, 2)).save(data, "PNG")
    cfg = IndexConfig.tiny()
    plain = Searcher.load(ws, cfg.with_(copy_check=False), encoder=FakeEncoder()).search(
        data.getvalue(), k=3
    )

    def broken(*args, **kwargs):
        raise ValueError("box can't be empty")

    monkeypatch.setattr(search_mod, "copy_scores", broken)
    res = Searcher.load(ws, cfg, encoder=FakeEncoder()).search(data.getvalue(), k=3)
    assert res.hits == plain.hits and res.copy_of is None
    assert "the copy check failed" in caplog.text


@pytest.mark.parametrize(
    "upload",
    [
        Image.new("RGB", (16, 16), (90, 30, 30)),  # smaller than any view
        Image.fromarray(np.random.default_rng(3).integers(0, 255, (19, 192, 3), np.uint8)),
        Image.fromarray(np.random.default_rng(4).integers(0, 255, (300, 2, 3), np.uint8)),
        Image.fromarray(np.random.default_rng(5).integers(0, 255, (60, 60), np.uint8), "L"),
    ],
    ids=["tiny", "wide strip", "thin strip", "grey"],
)
def test_small_or_elongated_uploads_are_not_called_copies(upload):
    big = [garment_photo(i, (70, 80)).resize((1200, 1600)) for i in range(3)]
    photos = [cc.catalog_photo(p, 1600) for p in big]
    scores = cc.copy_scores(upload, 1.0, photos)
    assert all(s is None or s < IndexConfig().copy_threshold for s in scores), scores


@pytest.mark.parametrize(
    ("aligned", "first", "named"),
    [
        ({"p000": 0.92, "p001": 0.95}, ["p001", "p000"], "p001"),  # above the threshold: named
        ({"p002": 0.8, "p001": 0.6}, ["p002"], None),  # a clear winner: first, not named
        ({"p002": 0.8, "p001": 0.7}, [], None),  # not clear: the descriptor's order stands
        ({"p002": 0.65}, [], None),  # below copy_floor
    ],
)
def test_which_hits_the_check_moves_first(garments, monkeypatch, aligned, first, named):
    import tiefjax.search as search_mod

    ws, images = garments
    data = io.BytesIO()
    Image.open(images / "p003.jpg").convert("RGB").save(data, "PNG")
    cfg = IndexConfig.tiny()
    plain = Searcher.load(ws, cfg.with_(copy_check=False), encoder=FakeEncoder())
    before = [h.id for h in plain.search(data.getvalue(), k=4).hits]
    monkeypatch.setattr(Searcher, "_catalog_photos", lambda self, ids: ids)
    monkeypatch.setattr(
        search_mod, "copy_scores", lambda img, px, ids: [aligned.get(i, 0.0) for i in ids]
    )
    res = Searcher.load(ws, cfg, encoder=FakeEncoder()).search(data.getvalue(), k=4)
    ids = [h.id for h in res.hits]
    assert ids == first + [i for i in before if i not in first]
    assert res.copy_of == named
