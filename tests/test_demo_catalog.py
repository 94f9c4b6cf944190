"""The demo catalog: deterministic photos whose manifest boxes match the pixels, and triplets
that respect same product > same silhouette and colour > other."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefjax.demo_catalog import (
    SIZES,
    DemoManifest,
    DemoPhoto,
    encode_jpeg,
    ground_truth_triplets,
    load_ground_truth,
    load_manifest,
    make_demo_catalog,
    render_photo,
    similarity_rank,
)
from tiefjax.errors import InvalidInput, NotFound
from tiefjax.store import ImageRecord, Store


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "images").iterdir())
    }


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoManifest]:
    out = tmp_path_factory.mktemp("demo") / "cat"
    return out, make_demo_catalog(out, 14, seed=5)


def _split(photo_id: str) -> tuple[int, int]:
    product, photo = photo_id[1:].split("-")
    return int(product), int(photo)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, catalog) -> None:
    out, manifest = catalog
    again = make_demo_catalog(tmp_path / "again", 14, seed=5)
    assert _hashes(tmp_path / "again") == _hashes(out)
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (
        out / "manifest.json"
    ).read_bytes()
    assert again == manifest
    other = make_demo_catalog(tmp_path / "other", 6, seed=6)
    shared = set(_hashes(tmp_path / "other").values()) & set(_hashes(out).values())
    assert not shared
    assert [p.box for p in other.photos] != [p.box for p in manifest.photos]


def test_manifest_describes_the_files(catalog) -> None:
    out, manifest = catalog
    assert load_manifest(out) == manifest
    assert len(manifest.photos) == 14
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{p.id}.jpg" for p in manifest.photos
    )
    for p in manifest.photos:
        with Image.open(out / p.file) as img:
            assert img.format == "JPEG"
            assert img.size == (p.width, p.height)
        assert (p.width, p.height) in SIZES
        left, top, right, bottom = p.box
        assert 0 <= left < right <= p.width and 0 <= top < bottom <= p.height
        assert (right - left) * (bottom - top) > 0.05 * p.width * p.height


def test_several_photos_per_product_with_the_same_look(catalog) -> None:
    _, manifest = catalog
    per_product = Counter(p.product for p in manifest.photos)
    assert all(2 <= c <= 6 for c in per_product.values())
    assert 3 <= len(per_product) <= 5
    for product in per_product:
        looks = {
            (p.silhouette, p.colour, p.pattern) for p in manifest.photos if p.product == product
        }
        assert len(looks) == 1
    # different photos of one product differ in framing
    boxes = [p.box for p in manifest.photos if p.product == manifest.photos[0].product]
    assert len(set(boxes)) == len(boxes)


def test_boxes_are_the_tight_bounds_of_the_garment_pixels(catalog) -> None:
    out, manifest = catalog
    for photo in manifest.photos[::2]:
        product, k = _split(photo.id)
        r = render_photo(5, product, k)
        assert r.box == photo.box
        assert (out / photo.file).read_bytes() == encode_jpeg(r.image)  # the file is this render
        # the box is the bounding box of every pixel that differs from the background alone
        changed = np.abs(r.image.astype(int) - r.background.astype(int)).max(-1) > 0
        ys, xs = np.nonzero(changed)
        tight = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert np.allclose(tight, photo.box, atol=2), (photo.id, tight, photo.box)
        # and the garment stands out from its background (the locator needs that)
        inside = r.mask > 0.99
        contrast = np.abs(r.image.astype(int) - r.background.astype(int))[inside].mean()
        assert contrast > 15, photo.id


def test_rerun_reuses_and_other_args_rewrite_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "cat"
    first = make_demo_catalog(out, 7, seed=1)
    stamp = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert make_demo_catalog(out, 7, seed=1) == first
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == stamp

    second = make_demo_catalog(out, 4, seed=2)
    assert sorted(p.stem for p in (out / "images").iterdir()) == [p.id for p in second.photos]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    assert load_manifest(out) == second


def test_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(InvalidInput, match="not a demo catalog"):
        make_demo_catalog(tmp_path, 4, seed=0)
    assert (tmp_path / "images" / "holiday.jpg").read_bytes() == b"mine"
    with pytest.raises(InvalidInput):
        make_demo_catalog(tmp_path / "x", 0)
    with pytest.raises(NotFound):
        load_manifest(tmp_path / "nowhere")


# -- triplets on a hand-made manifest (no rendering needed) ----------------------------------------


def _manifest() -> DemoManifest:
    looks = [  # product -> (silhouette, colour, pattern); p0/p1/p2 share silhouette and colour
        ("a-line dress", "red", "dots"),
        ("a-line dress", "red", "solid"),
        ("a-line dress", "red", "stripes"),
        ("trousers", "navy", "solid"),
        ("trousers", "navy", "checks"),
        ("blouse", "ivory", "floral"),
        ("a-line dress", "navy", "dots"),
    ]
    photos = [
        DemoPhoto(
            f"p{i:03d}-{k}",
            f"images/p{i:03d}-{k}.jpg",
            360,
            480,
            (1, 2, 300, 400),
            f"p{i:03d}",
            sil,
            col,
            pat,
        )  # fmt: skip
        for i, (sil, col, pat) in enumerate(looks)
        for k in range(4)
    ]
    return DemoManifest(seed=0, photos=photos)


def test_triplets_respect_the_ground_truth_order() -> None:
    manifest = _manifest()
    by_id = manifest.by_id()
    triplets = ground_truth_triplets(manifest, seed=3, per_image=2)
    assert len(triplets) == len(set(triplets)) == 2 * len(manifest.photos)
    kinds = Counter()
    for ref, pos, neg in triplets:
        assert len({ref, pos, neg}) == 3
        r, p, n = by_id[ref], by_id[pos], by_id[neg]
        assert similarity_rank(r, p) > similarity_rank(r, n)
        kinds[(similarity_rank(r, p), similarity_rank(r, n))] += 1
    # both kinds (positive = same product; positive = same silhouette+colour), hard negatives too
    assert kinds[(2, 0)] > 0 and kinds[(2, 1)] > 0 and kinds[(1, 0)] > 0
    # a product without a same-silhouette-and-colour sibling still gets same-product triplets
    assert sum(t[0].startswith("p005") for t in triplets) == 8
    assert ground_truth_triplets(manifest, seed=3) == triplets
    assert ground_truth_triplets(manifest, seed=4) != triplets
    assert len(ground_truth_triplets(manifest, seed=3, per_image=5)) == 5 * len(manifest.photos)


def test_triplets_of_a_catalog_without_comparisons_are_empty() -> None:
    one = DemoManifest(0, [DemoPhoto("p000-0", "x", 360, 480, (0, 0, 9, 9), "p000", "t", "c", "s")])
    assert ground_truth_triplets(one, seed=0) == []


def test_load_ground_truth_into_the_store(tmp_path: Path, catalog) -> None:
    out, manifest = catalog
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(NotFound, match="tiefjax init"):
            load_ground_truth(store, manifest)
        skipped = manifest.photos[-1]
        for p in manifest.photos[:-1]:
            store.upsert_image(ImageRecord(p.id, str(out / p.file), p.width, p.height, "0" * 64))
        n_boxes, n_triplets = load_ground_truth(store, manifest, seed=0)
        assert n_boxes == len(manifest.photos) - 1
        boxes = store.boxes()
        assert skipped.id not in boxes
        for p in manifest.photos[:-1]:
            assert boxes[p.id].box.as_tuple() == p.box
        stored = [(t.reference, t.positive, t.negative) for t in store.list_triplets()]
        assert len(stored) == n_triplets > 0
        assert all(skipped.id not in t for t in stored)
        assert load_ground_truth(store, manifest, seed=0) == (n_boxes, n_triplets)  # idempotent
        assert store.count_triplets() == n_triplets


def test_photo_counts_add_up_to_n_and_leave_no_single_photo_product():
    from tiefjax.demo_catalog import _photo_counts

    for seed in range(3):
        for n in range(2, 60):
            counts = _photo_counts(seed, n)
            assert sum(counts) == n, (seed, n, counts)
            assert min(counts) >= 2 or len(counts) == 1, (seed, n, counts)
