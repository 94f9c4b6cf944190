"""Box extraction: sliding heads, window geometry, combination rule, fallback."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.locate import LocateConfig, Locator, Windows, combine_windows
from tiefjax.models import make_encoder
from tiefjax.nets.alexnet import PATCH, STRIDE, WINDOW, init_encoder_params
from tiefjax.nets.heads import BoxRegressors, CropClassifier
from tiefjax.workspace import Workspace

MEAN = np.array([10.0, 20.0, 200.0, 210.0], np.float32)
STD = np.array([5.0, 5.0, 5.0, 5.0], np.float32)


def _heads(seed: int = 0):
    fmap = jnp.zeros((1, PATCH, PATCH, 256))
    clf, reg = CropClassifier(hidden=16, hidden2=8), BoxRegressors(hidden=8, hidden2=4)
    key1, key2 = jax.random.split(jax.random.PRNGKey(seed))
    return (clf, clf.init(key1, fmap)["params"]), (reg, reg.init(key2, fmap)["params"])


def _constant_heads(foreground_logit: float, deltas: np.ndarray):
    """Heads whose outputs ignore the map: a fixed logit pair and fixed normalised deltas."""
    (clf, clf_params), (reg, reg_params) = _heads()
    clf_params = jax.tree.map(jnp.zeros_like, clf_params)
    clf_params["logits"]["bias"] = jnp.array([0.0, foreground_logit])
    reg_params = jax.tree.map(jnp.zeros_like, reg_params)
    reg_params["out"]["bias"] = jnp.asarray((deltas - MEAN) / STD)
    return (clf, clf_params), (reg, reg_params)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_sliding_heads_equal_heads_on_each_cut_patch():
    pixels = np.asarray(_photo(288, 320))[None]
    fmap = jnp.asarray(make_encoder(init_encoder_params(0))(pixels))
    (clf, clf_params), (reg, reg_params) = _heads()
    slid_logits = clf.apply({"params": clf_params}, fmap)
    slid_deltas = reg.apply({"params": reg_params}, fmap)
    h, w = fmap.shape[1] - PATCH + 1, fmap.shape[2] - PATCH + 1
    assert slid_logits.shape == (1, h, w, 2) and slid_deltas.shape == (1, h, w, 4)
    for i in range(h):
        for j in range(w):
            patch = fmap[:, i : i + PATCH, j : j + PATCH]
            np.testing.assert_allclose(
                clf.apply({"params": clf_params}, patch)[0, 0, 0],
                slid_logits[0, i, j],
                rtol=1e-4,
                atol=1e-5,
            )
            np.testing.assert_allclose(
                reg.apply({"params": reg_params}, patch)[0, 0, 0],
                slid_deltas[0, i, j],
                rtol=1e-4,
                atol=1e-5,
            )


def test_window_crop_encoding_matches_the_map_where_padding_cannot_reach():
    """Each 224 window of a photo maps to an 11x11 patch of the photo's map (stride 16).

    AlexNet pads every convolution, so a window encoded on its own sees zeros where the photo
    has pixels: only the patch's centre cell is free of that border effect. The centre must
    match exactly; the rest of the patch differs (which is why the heads are trained on crops
    encoded on their own, like the windows they later slide over, and tested on the map).
    """
    encode = make_encoder(init_encoder_params(0))
    pixels = np.asarray(_photo(WINDOW + 2 * STRIDE, WINDOW + STRIDE, seed=3))
    fmap = encode(pixels[None])[0]
    for i, j in [(0, 0), (1, 2), (0, 2)]:
        crop = pixels[i * STRIDE : i * STRIDE + WINDOW, j * STRIDE : j * STRIDE + WINDOW]
        alone = encode(crop[None])[0]
        patch = fmap[i : i + PATCH, j : j + PATCH]
        np.testing.assert_allclose(alone[5, 5], patch[5, 5], rtol=1e-4, atol=1e-4)
        # the agreement over the whole patch is high but not exact (padding):
        corr = np.corrcoef(alone.ravel(), patch.ravel())[0, 1]
        assert corr > 0.5, corr


def test_single_window_box_maps_back_to_photo_pixels():
    deltas = np.array([30.0, 40.0, 180.0, 200.0], np.float32)
    clf, reg = _constant_heads(6.0, deltas)
    config = LocateConfig(short_sides=(WINDOW,), threshold=0.5)
    locator = Locator(init_encoder_params(0), clf, reg, MEAN, STD, config)
    found = locator.locate(_photo(112, 112))  # scale 2: one window, box halves
    assert not found.fallback and found.windows == 1
    np.testing.assert_allclose(found.box, deltas / 2, atol=1e-3)
    assert found.probability == pytest.approx(1 / (1 + np.exp(-6.0)), rel=1e-5)


def test_window_origins_step_by_the_stride_and_stay_inside_the_photo():
    deltas = np.array([0.0, 0.0, 224.0, 224.0], np.float32)
    clf, reg = _constant_heads(6.0, deltas)
    config = LocateConfig(short_sides=(WINDOW,), threshold=0.5)
    locator = Locator(init_encoder_params(0), clf, reg, MEAN, STD, config)
    photo = _photo(WINDOW + 3 * STRIDE + 5, WINDOW)  # 4 windows across, padding to the right
    found = locator.windows(photo)
    np.testing.assert_allclose(found.boxes[:, 0], np.arange(4) * STRIDE, atol=1e-3)
    assert (found.boxes[:, 2] <= photo.width).all()


def test_no_foreground_window_falls_back_to_the_whole_photo():
    clf, reg = _constant_heads(-6.0, np.array([1.0, 1.0, 100.0, 100.0], np.float32))
    locator = Locator(
        init_encoder_params(0), clf, reg, MEAN, STD, LocateConfig(short_sides=(WINDOW,))
    )
    found = locator.locate(_photo(300, 240))
    assert found.fallback and found.windows == 0
    assert found.box == (0.0, 0.0, 300.0, 240.0)


def test_each_corner_is_averaged_over_the_windows_on_its_side():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [4, 4, 30, 30]], np.float32)
    centres = np.array([[0, 0], [30, 30], [20, 20]], np.float32)
    found = Windows(np.array([0.9, 0.9, 0.9]), boxes, centres)
    box = combine_windows(found, np.ones(3, bool))
    # mean box (8, 8, 26.67, 26.67), centre 17.3: left/top from window 0, right/bottom from 1, 2
    np.testing.assert_allclose(box, [0, 0, 35, 35], atol=1e-4)
    weighted = combine_windows(
        Windows(np.array([0.9, 0.1, 0.9]), boxes, centres), np.ones(3, bool), weighted=True
    )
    assert weighted[2] < box[2]  # the low-probability window pulls less


def test_settings_are_checked_and_missing_heads_are_named(tmp_path):
    with pytest.raises(InvalidInput, match="combine"):
        LocateConfig(combine="median")
    with pytest.raises(InvalidInput, match="short_sides"):
        LocateConfig(short_sides=(100,))
    with pytest.raises(InvalidInput, match="batch_size"):
        LocateConfig(batch_size=-1)
    clf, reg = _heads()
    params = init_encoder_params(0)
    automatic = Locator(params, clf, reg, MEAN, STD, LocateConfig())
    assert automatic.batch_size == (1 if jax.default_backend() == "cpu" else 16)
    assert Locator(params, clf, reg, MEAN, STD, LocateConfig(batch_size=4)).batch_size == 4
    with pytest.raises(NotFound, match="tiefjax train .* classifier"):
        Locator.load(Workspace(tmp_path))


def test_locating_many_photos_together_equals_locating_each_alone():
    """Photos of two shapes at two scales, in batch parts of 4 + 2 + 1: every photo gets the
    windows and box it gets alone (its batch neighbours change nothing)."""
    deltas = np.array([30.0, 40.0, 180.0, 200.0], np.float32)
    (clf, clf_params), _ = _heads(seed=1)
    _, reg = _constant_heads(6.0, deltas)
    config = LocateConfig(short_sides=(WINDOW, 256), threshold=0.45, batch_size=4)
    locator = Locator(init_encoder_params(0), (clf, clf_params), reg, MEAN, STD, config)
    photos = [_photo(300, 240, seed=s) for s in range(5)] + [_photo(240, 330, seed=9)] * 2
    alone = [locator.windows(p) for p in photos]
    together = locator.windows_many(photos)
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t.probability, a.probability, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.boxes, a.boxes, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(t.centres, a.centres)
    assert len({a.probability.size for a in alone}) == 2  # the two shapes differ in windows
    boxes = [found.box for found in locator.locate_many(photos)]
    np.testing.assert_allclose(boxes, [locator.locate(p).box for p in photos], atol=1e-3)
    assert locator.locate_many([]) == []


def test_locate_command_answers_in_order_and_names_unreadable_photos(tmp_path, monkeypatch, capsys):
    from tiefjax import cli
    from tiefjax.catalog import init_workspace

    deltas = np.array([30.0, 40.0, 180.0, 200.0], np.float32)
    clf, reg = _constant_heads(6.0, deltas)
    config = LocateConfig(short_sides=(WINDOW,), batch_size=2)
    locator = Locator(init_encoder_params(0), clf, reg, MEAN, STD, config)
    monkeypatch.setattr(Locator, "load", classmethod(lambda cls, ws, config=None: locator))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        _photo(112, 112).save(photos / f"{name}.png")
    smooth = np.asarray(_photo(14, 14).resize((896, 896), Image.Resampling.BICUBIC))
    Image.fromarray(smooth).save(photos / "c.jpg", quality=90)  # draft-decoded at 1/4
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    init_workspace(tmp_path / "ws", photos)
    order = ["a.png", "broken.jpg", "b.png", "c.jpg"]
    code = cli.main(["locate", str(tmp_path / "ws"), *[str(photos / n) for n in order], "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # one photo failed
    assert [Path(line["image"]).name for line in lines] == order
    assert "broken.jpg" in lines[1]["error"] and "box" not in lines[1]
    for line, scale in ((lines[0], 1 / 2), (lines[2], 1 / 2), (lines[3], 4)):
        box = line["box"]  # in the photo's own pixels (c.jpg: found at 224, 1/4 of 896)
        np.testing.assert_allclose(
            [box["left"], box["top"], box["right"], box["bottom"]], deltas * scale, atol=1e-3
        )
