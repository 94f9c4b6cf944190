"""Catalog encoding: box choice, incremental re-use, corrupt images, the real encoder's maths."""

from __future__ import annotations

import numpy as np
import pytest
from _index_fakes import FakeEncoder, FakeLocator, make_catalog, make_workspace, photo
from PIL import Image

from tiefjax.catalog import init_workspace
from tiefjax.images import content_box
from tiefjax.index.build import build_index, current_build
from tiefjax.index.config import IndexConfig
from tiefjax.index.descriptors import reduce_descriptors
from tiefjax.index.encode import FEATURE_DIM
from tiefjax.index.row_table import RowTable
from tiefjax.index.scann_index import l2_normalize
from tiefjax.store import Box, Store

CFG = IndexConfig.tiny()


def _rows(ws):
    build = current_build(ws)
    assert not (build / "rows.json").exists()  # rows/ is the one form a build writes
    table = RowTable.open(build)
    return build, {r.id: r.to_json() for r in map(table.row, range(len(table)))}


def test_incremental_add_change_remove(tmp_path):
    ws, images = make_workspace(tmp_path, 6)
    enc = FakeEncoder()
    first = build_index(ws, CFG, encoder=enc, locator=None, progress=False)
    assert (first.images, first.encoded, first.reused) == (6, 6, 0)
    build1, rows1 = _rows(ws)
    feats1 = np.load(build1 / "features.npy")
    assert feats1.shape == (6, FEATURE_DIM) and feats1.dtype == np.float16

    (images / "p000.jpg").unlink()  # removed
    photo(99).save(images / "p001.jpg")  # changed content
    make_catalog(images, 2, start=50)  # added
    init_workspace(ws.root, images)
    second = build_index(ws, CFG, encoder=enc, locator=None, progress=False)
    assert (second.images, second.encoded, second.reused) == (7, 3, 4)
    build2, rows2 = _rows(ws)
    assert sorted(rows2) == ["p001", "p002", "p003", "p004", "p005", "p050", "p051"]
    feats2 = np.load(build2 / "features.npy")
    order1, order2 = list(rows1), list(rows2)
    for same in ("p002", "p005"):
        np.testing.assert_array_equal(feats2[order2.index(same)], feats1[order1.index(same)])
    assert rows2["p001"]["sha256"] != rows1["p001"]["sha256"]

    calls = enc.calls
    third = build_index(ws, CFG, encoder=enc, locator=None, progress=False)
    assert (third.encoded, third.reused) == (0, 7) and enc.calls == calls
    # a different encoder invalidates every row
    fourth = build_index(ws, CFG, encoder=FakeEncoder(fingerprint="fake-2"), progress=False)
    assert fourth.encoded == 7


def test_boxes_annotation_detection_whole_and_store(tmp_path):
    ws, images = make_workspace(tmp_path, 4)
    with Store(ws.store_path) as store:
        store.put_box("p000", Box(10, 5, 60, 50))

    build_index(ws, CFG, encoder=FakeEncoder(), locator=(FakeLocator(), "loc-1"), progress=False)
    _, rows = _rows(ws)
    assert rows["p000"]["source"] == "annotation" and rows["p000"]["box"] == [10, 5, 60, 50]
    assert rows["p001"]["source"] == "detection" and rows["p001"]["probability"] == 0.9
    assert rows["p001"]["box"] == [1.0, 2.0, 93.0, 68.0]
    with Store(ws.store_path) as store:
        dets = store.detections()
    assert set(dets) == {"p001", "p002", "p003"} and dets["p002"].score == pytest.approx(0.9)

    build_index(ws, CFG.with_(trim_borders=False), encoder=FakeEncoder(), progress=False)
    _, rows = _rows(ws)
    assert rows["p001"]["source"] == "whole" and rows["p001"]["box"] == [0, 0, 96, 72]
    # trimmed (the default): the photo's plain background is cut down to the blob on it
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    _, rows = _rows(ws)
    with Image.open(images / "p001.jpg") as img:
        trimmed = list(content_box(img.convert("RGB")))
    assert rows["p001"]["source"] == "whole" and rows["p001"]["box"] == pytest.approx(trimmed)
    assert (trimmed[2] - trimmed[0]) * (trimmed[3] - trimmed[1]) < 0.5 * 96 * 72


def test_photos_to_locate_decode_small_and_boxes_map_back_to_their_pixels(tmp_path):
    ws, images = make_workspace(tmp_path, 3)  # 96x72 JPEGs
    locator = FakeLocator(short_side=36)  # JPEG draft mode decodes them at half size
    build_index(ws, CFG, encoder=FakeEncoder(), locator=(locator, "loc-1"), progress=False)
    assert set(locator.sizes) == {(48, 36)}
    _, rows = _rows(ws)
    assert rows["p001"]["box"] == [2.0, 4.0, 90.0, 64.0]  # (1, 2, 45, 32) found at half size
    with Store(ws.store_path) as store:
        assert store.detections()["p001"].box.as_tuple() == (2.0, 4.0, 90.0, 64.0)


def test_corrupt_image_reported_and_skipped(tmp_path):
    ws, images = make_workspace(tmp_path, 5)
    (images / "p003.jpg").write_bytes((images / "p003.jpg").read_bytes()[:200])  # truncated
    report = build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    assert report.images == 4 and [e[0] for e in report.errors] == ["p003"]
    assert "p003" in report.summary()
    build, rows = _rows(ws)
    assert "p003" not in rows and np.load(build / "features.npy").shape[0] == 4


def test_empty_catalog_is_a_clear_error(tmp_path):
    from tiefjax.errors import InvalidInput
    from tiefjax.store import Store as S
    from tiefjax.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    S(ws.store_path).close()
    with pytest.raises(InvalidInput, match="no images"):
        build_index(ws, CFG, encoder=FakeEncoder(), progress=False)


def test_reduction_lossless_for_small_catalogs_and_measured_for_large():
    rng = np.random.default_rng(0)
    x = l2_normalize(np.abs(rng.standard_normal((120, 2000))).astype(np.float32))
    small = reduce_descriptors(x, dim=16, recall_sample=50)
    assert small.recall_at_10 == 1.0 and small.projection.dim <= 120
    q = l2_normalize(rng.standard_normal((3, 2000)))
    np.testing.assert_allclose(  # dot products with catalog vectors survive the projection
        (q @ small.projection.basis.T) @ small.vectors.T, q @ x.T, atol=1e-4
    )
    # low-rank catalog (a few hundred "products"): 64 dims keep recall, measured
    centres = rng.standard_normal((40, 2000)).astype(np.float32)
    y = l2_normalize(centres[rng.integers(0, 40, 600)] + 0.3 * rng.standard_normal((600, 2000)))
    big = reduce_descriptors(y, dim=64, fit_sample=300, recall_sample=60)
    assert big.projection.dim >= 64 and big.recall_at_10 >= 0.95 and big.tried


def test_real_encoder_descriptor_is_the_original_score(tmp_path):
    """Dot product of unsupervised descriptors == mean cosine of aligned locations (5.2)."""
    from tiefjax.index.encode import FeatureEncoder
    from tiefjax.models import make_encoder
    from tiefjax.nets.alexnet import init_encoder_params

    params = init_encoder_params(0)
    windows = np.stack([np.asarray(photo(i).resize((224, 224))) for i in range(3)])
    enc = FeatureEncoder(params, "t", batch_size=2)
    feats = enc(windows)  # 2 batches, the last one a single window
    assert feats.shape == (3, FEATURE_DIM)
    assert np.allclose(FeatureEncoder(params, "t", batch_size=4)(windows), feats, atol=1e-5)
    fmap = make_encoder(params)(windows)  # (3, 11, 11, 256)
    unit = fmap / np.maximum(np.linalg.norm(fmap, axis=-1, keepdims=True), 1e-12)
    original = np.einsum("hwc,hwc->hw", unit[0], unit[1]).mean()
    ours = (feats[0] / 11) @ (feats[1] / 11)
    assert ours == pytest.approx(original, abs=1e-4)


def test_trained_fingerprint_ignores_metrics_log_but_follows_final(tmp_path):
    """Resuming a finished training rewrites metrics.jsonl; that must not look like new heads."""
    from tiefjax.index.encode import trained_fingerprint
    from tiefjax.workspace import Workspace

    ws = Workspace(tmp_path)
    untrained = trained_fingerprint(ws, "ranking")
    train_dir = ws.train_dir("ranking")
    train_dir.mkdir(parents=True)
    (train_dir / "final.json").write_text('{"dir": "final-10-aaaa"}')
    first = trained_fingerprint(ws, "ranking")
    (train_dir / "metrics.jsonl").write_text('{"step": 10}\n')
    assert trained_fingerprint(ws, "ranking") == first != untrained
    (train_dir / "final.json").write_text('{"dir": "final-20-bbbb"}')
    assert trained_fingerprint(ws, "ranking") != first


def test_short_batches_pad_to_powers_of_two_then_to_the_device_count():
    from tiefjax.inference import padded_rows

    assert [padded_rows(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)] == [1, 2, 4, 8, 8, 16, 16]
    assert padded_rows(20, 16) == 16 and padded_rows(3, 6) == 4 and padded_rows(5, 6) == 6
    assert [padded_rows(n, 16, 4) for n in (1, 3, 5, 9)] == [4, 4, 8, 16]
    assert [padded_rows(n, 12, 3) for n in (1, 2, 5, 12)] == [3, 3, 9, 12]
