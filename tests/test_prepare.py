"""prepare(): what it writes is what load_split returns; rebuilt only on change; atomic."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefjax import prepare as prepare_mod
from tiefjax.catalog import init_workspace
from tiefjax.cli import main
from tiefjax.data import builders
from tiefjax.data.crops import (
    CLASSIFICATION,
    FOREGROUND,
    REGRESSION,
    PrepareConfig,
    decode_size,
    product_crop,
    product_size,
    render_crops,
    sample_crops,
)
from tiefjax.data.splits import split_of
from tiefjax.errors import Conflict, InvalidInput, NotFound
from tiefjax.images import load_rgb
from tiefjax.prepare import load_split, prepare, prepared_state, regression_stats
from tiefjax.store import Box, Store
from tiefjax.workspace import Workspace

CONFIG = dataclasses.replace(PrepareConfig.tiny(), test_fraction=0.4, seed=3)
# id -> (width, height, box or None)
PHOTOS = {
    "a": (260, 230, (40, 30, 200, 220)),
    "b": (300, 240, (100, 20, 290, 230)),
    "c": (240, 320, (10, 100, 230, 310)),
    "d": (330, 250, (0, 0, 170, 250)),
    "e": (250, 250, (60, 60, 190, 190)),
    "f": (280, 236, None),
}
TRIPLETS = [("a", "b", "c"), ("d", "e", "f"), ("f", "a", "e")]


def _make_workspace(root: Path) -> Workspace:
    images = root / "photos"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (image_id, (w, h, box)) in enumerate(PHOTOS.items()):
        px = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        if box:
            left, top, right, bottom = box
            px[top:bottom, left:right] = (200, 40 * i, 250 - 40 * i)
        Image.fromarray(px).save(images / f"{image_id}.png")
    ws = Workspace(root / "ws")
    init_workspace(ws.root, images)
    with Store(ws.store_path) as store:
        for image_id, (_, _, box) in PHOTOS.items():
            if box:
                store.put_box(image_id, Box(*box), expected_version=None)
        for t in TRIPLETS:
            store.add_triplet(*t)
    return ws


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    ws = _make_workspace(tmp_path_factory.mktemp("prep"))
    return ws, prepare(ws, CONFIG)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return _make_workspace(tmp_path)


def _path(ws: Workspace, image_id: str) -> Path:
    with Store(ws.store_path) as store:
        return Path(store.get_image(image_id).path)


def _expected_crops(
    ws: Workspace, split: str, crop_set: str, config: PrepareConfig = CONFIG
) -> list[tuple]:
    """(image_id, label, target, pixels) of one crop set computed directly, without tfds."""
    out = []
    for image_id, (w, h, box) in PHOTOS.items():
        if box is None or split_of(image_id, config.test_fraction, config.seed) != split:
            continue
        specs = sample_crops(image_id, w, h, box, config)
        img = load_rgb(_path(ws, image_id), target_size=decode_size(w, h, config))
        for spec, px in zip(specs, render_crops(img, specs), strict=True):
            if crop_set in spec.sets:
                out.append((image_id, spec.label, np.float32(spec.target), px))
    return out


def _key(image_id, label, target, px) -> tuple:
    return (image_id, label, tuple(np.float32(target).tolist()), px.tobytes())


def test_splits_hold_both_kinds_of_image():
    splits = Counter(split_of(i, CONFIG.test_fraction, CONFIG.seed) for i in PHOTOS)
    assert splits["train"] >= 2 and splits["test"] >= 1  # the fixture covers both splits


@pytest.mark.parametrize("split", ["train", "test"])
def test_classification_round_trip(prepared, split):
    ws, summary = prepared
    src = load_split(ws, "classification", split)
    expected = _expected_crops(ws, split, CLASSIFICATION)
    assert len(src) == len(expected) == summary.counts["classification"][split]["total"]
    got = [src[i] for i in range(len(src))]
    for rec in got:
        assert set(rec) == {"image", "label", "image_id"}
        assert rec["image"].shape == (224, 224, 3) and rec["image"].dtype == np.uint8
        assert isinstance(rec["label"], int) and isinstance(rec["image_id"], str)
    assert Counter(_key(r["image_id"], r["label"], (0, 0, 0, 0), r["image"]) for r in got) == (
        Counter(_key(i, label, (0, 0, 0, 0), px) for i, label, _, px in expected)
    )
    fg = sum(r["label"] == FOREGROUND for r in got)
    assert summary.counts["classification"][split]["foreground"] == fg
    assert summary.counts["classification"][split]["background"] == len(got) - fg
    assert "f" not in {r["image_id"] for r in got}  # no box: not in the crop sets
    batch = src.__getitems__([0, len(src) - 1])
    np.testing.assert_array_equal(batch[1]["image"], src[-1]["image"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_regression_round_trip(prepared, split):
    ws, summary = prepared
    src = load_split(ws, "regression", split)
    expected = _expected_crops(ws, split, REGRESSION)
    assert all(e[1] == FOREGROUND for e in expected)
    assert len(src) == len(expected) == summary.counts["regression"][split]["total"]
    got = [src[i] for i in range(len(src))]
    assert all(r["target"].dtype == np.float32 and r["target"].shape == (4,) for r in got)
    assert Counter(_key(r["image_id"], 1, r["target"], r["image"]) for r in got) == Counter(
        _key(*e) for e in expected
    )


def test_regression_stats_from_train_targets(prepared):
    ws, _ = prepared
    targets = np.array([e[2] for e in _expected_crops(ws, "train", REGRESSION)])
    mean, std = regression_stats(ws)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (4,)
    np.testing.assert_allclose(mean, targets.mean(0), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(std, targets.std(0), rtol=1e-4, atol=1e-3)
    stamp = json.loads((ws.datasets_dir / "prepared.json").read_text())
    assert stamp["regression"]["mean"] == pytest.approx(mean.tolist())


def test_separate_regression_scales(ws):
    """Regression crops only from regression_short_sides, classification only from short_sides:
    the classification set is the one prepared without the regression settings."""
    config = dataclasses.replace(
        CONFIG, short_sides=(224,), regression_short_sides=(256, 288), regression_crops_per_scale=3
    )
    alone = dataclasses.replace(config, regression_short_sides=(), regression_crops_per_scale=0)
    summary = prepare(ws, config)
    for split in ("train", "test"):
        src = load_split(ws, CLASSIFICATION, split)
        got = Counter(
            _key(src[i]["image_id"], src[i]["label"], (0,) * 4, src[i]["image"])
            for i in range(len(src))
        )
        want = _expected_crops(ws, split, CLASSIFICATION, alone)
        assert got == Counter(_key(i, label, (0,) * 4, px) for i, label, _, px in want)
        assert len(src) == summary.counts[CLASSIFICATION][split]["total"]

        src = load_split(ws, REGRESSION, split)
        got = Counter(
            _key(src[i]["image_id"], 1, src[i]["target"], src[i]["image"]) for i in range(len(src))
        )
        want = _expected_crops(ws, split, REGRESSION, config)
        assert want and got == Counter(_key(*e) for e in want)
        assert len(src) == summary.counts[REGRESSION][split]["total"]
    scales = {
        spec.short_side
        for image_id, (w, h, box) in PHOTOS.items()
        if box is not None
        for spec in sample_crops(image_id, w, h, box, config)
        if REGRESSION in spec.sets
    }
    assert scales == {256, 288}  # none at 224, the classification scale
    targets = np.array([e[2] for e in _expected_crops(ws, "train", REGRESSION, config)])
    mean, _ = regression_stats(ws)
    np.testing.assert_allclose(mean, targets.mean(0), rtol=1e-5, atol=1e-3)
    assert prepared_state(ws)["config"]["regression_short_sides"] == [256, 288]


def test_triplets_round_trip(prepared):
    ws, summary = prepared
    for split in ("train", "test"):
        src = load_split(ws, "triplets", split)
        expected = [
            t for t in TRIPLETS if split_of(t[0], CONFIG.test_fraction, CONFIG.seed) == split
        ]
        assert len(src) == len(expected) == summary.counts["triplets"][split]["total"]
        for i in range(len(src)):
            rec = src[i]
            ids = (rec["reference_id"], rec["positive_id"], rec["negative_id"])
            assert ids in expected
            for key, image_id in zip(("reference", "positive", "negative"), ids, strict=True):
                w, h, box = PHOTOS[image_id]
                img = load_rgb(_path(ws, image_id), target_size=product_size(w, h, box))
                np.testing.assert_array_equal(rec[key], product_crop(img, box, (w, h)))


def test_summary(prepared):
    _, summary = prepared
    assert summary.rebuilt and summary.images == 6
    assert (summary.with_box, summary.without_box) == (5, 1)
    assert sum(summary.split_images.values()) == 5
    assert "1 without a box" in summary.table()


def test_cli(ws, capsys):
    (ws.config_path).write_text(
        "[prepare]\nshort_sides = [224]\ncrops_per_scale = 1\nregression_short_sides = [256]\n"
    )
    assert main(["prepare", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "classification  train" in out and "without a box" in out
    assert prepared_state(ws)["config"]["short_sides"] == [224]
    assert prepared_state(ws)["config"]["regression_short_sides"] == [256]
    assert main(["prepare", str(ws.root)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["prepare", str(ws.root), "--force"]) == 0
    assert "datasets prepared" in capsys.readouterr().out


def test_rebuilt_only_on_change(ws):
    first = prepare(ws, CONFIG)
    again = prepare(ws, CONFIG)
    assert first.rebuilt and not again.rebuilt and again.build == first.build
    with Store(ws.store_path) as store:
        store.put_box("e", Box(50, 50, 200, 200), expected_version=None)
    changed = prepare(ws, CONFIG)
    assert changed.rebuilt and changed.build != first.build
    assert not (ws.datasets_dir / first.build).exists()  # old build removed
    other = prepare(ws, dataclasses.replace(CONFIG, flips=False))
    assert other.rebuilt
    for change in ({"regression_short_sides": (256,)}, {"regression_crops_per_scale": 3}):
        config = dataclasses.replace(CONFIG, flips=False, **change)
        assert prepare(ws, config).rebuilt, change
        assert not prepare(ws, config).rebuilt, change
    assert prepare(ws, dataclasses.replace(CONFIG, flips=False), force=True).rebuilt
    builds = [p.name for p in ws.datasets_dir.iterdir() if p.name.startswith(("build-", ".build"))]
    assert builds == [prepared_state(ws)["build"]]


def test_interrupted_prepare_keeps_the_old_set(ws, monkeypatch):
    first = prepare(ws, CONFIG)
    before = load_split(ws, "regression", "train")
    old = [before[i]["target"] for i in range(len(before))]
    with Store(ws.store_path) as store:
        store.put_box("a", Box(0, 0, 260, 230), expected_version=None)
    real = builders.write_dataset

    def interrupted(name, *args, **kwargs):
        if name == "regression":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builders, "write_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(ws, CONFIG)
    assert prepared_state(ws)["build"] == first.build
    after = load_split(ws, "regression", "train")
    assert [after[i]["target"].tolist() for i in range(len(after))] == [t.tolist() for t in old]
    assert not list(ws.datasets_dir.glob(".build-*"))
    # a prepare killed outright leaves its partial folder: the next one removes it and rebuilds
    (ws.datasets_dir / ".build-x-dead.partial" / "classification").mkdir(parents=True)
    monkeypatch.setattr(builders, "write_dataset", real)
    redone = prepare(ws, CONFIG)
    assert redone.rebuilt and redone.build != first.build
    assert not list(ws.datasets_dir.glob(".build-*"))


def test_unreadable_photo_is_skipped_not_fatal(ws):
    _path(ws, "b").write_bytes(b"not an image any more")
    summary = prepare(ws, CONFIG)
    assert [i for i, _ in summary.skipped] == ["b"]
    assert "b" not in {
        load_split(ws, "classification", s)[i]["image_id"]
        for s in ("train", "test")
        for i in range(len(load_split(ws, "classification", s)))
    }
    assert summary.triplets_left_out == 1  # (a, b, c) needs b


def test_errors(ws, tmp_path):
    with pytest.raises(NotFound, match="tiefjax prepare"):
        load_split(ws, "classification", "train")
    with pytest.raises(NotFound, match="tiefjax prepare"):
        regression_stats(ws)
    with pytest.raises(InvalidInput, match="dataset"):
        load_split(ws, "boxes", "train")
    with pytest.raises(InvalidInput, match="split"):
        load_split(ws, "classification", "validation")
    with Store(ws.store_path) as store:
        for image_id in store.boxes():
            store.delete_box(image_id)
    with pytest.raises(InvalidInput, match="no product boxes"):
        prepare(ws, CONFIG)
    with pytest.raises(NotFound, match="not a tiefjax workspace"):
        prepare(Workspace(tmp_path / "nothing"))


def test_second_prepare_at_once_is_refused(ws):
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    with open(ws.datasets_dir / ".prepare.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Conflict, match="another"):
            prepare_mod.prepare(ws, CONFIG)
