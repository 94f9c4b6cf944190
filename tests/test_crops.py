"""Crop sampling, labels and regression targets against hand-computed cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tiefjax.data.crops import (
    BACKGROUND,
    CLASSIFICATION,
    FOREGROUND,
    REGRESSION,
    WINDOW,
    CropSpec,
    PrepareConfig,
    box_deltas,
    decode_image,
    decode_size,
    encode_image,
    flip_deltas,
    inside_fraction,
    intersection_area,
    label_for,
    product_crop,
    render_crops,
    sample_crops,
    scaled_size,
)
from tiefjax.errors import InvalidInput
from tiefjax.images import resize_short_side

W0 = (0, 0, 224, 224)  # the window at the origin


# -- labels -----------------------------------------------------------------------------------
def test_exactly_half_inside_is_foreground():
    """112 x 224 of a 224 x 224 crop inside the box: both definitions hold, foreground wins."""
    box = (0, 0, 112, 224)
    assert intersection_area(W0, box) == 112 * 224 == 224 * 224 / 2
    assert inside_fraction(W0, box) == 0.5
    assert label_for(W0, box) == FOREGROUND


@pytest.mark.parametrize(
    "box",
    [(0, 0, 111.9, 224), (0, 0, 112, 223.9), (112.1, 0, 500, 500), (-50, 0, 111, 224)],
)
def test_just_under_half_inside_is_background(box):
    assert inside_fraction(W0, box) < 0.5
    assert label_for(W0, box) == BACKGROUND


def test_half_inside_in_both_axes():
    """A box covering the window's right half and more than its height: exactly 50 %."""
    window = (100, 40, 324, 264)
    box = (212, 0, 400, 300)
    assert intersection_area(window, box) == 112 * 224
    assert label_for(window, box) == FOREGROUND


def test_exclusive_edges():
    """A box sharing one pixel column with the window overlaps by 1 x 224, not 2 x 225."""
    assert intersection_area(W0, (223, 0, 300, 224)) == 224
    assert intersection_area(W0, (224, 0, 300, 224)) == 0  # touching edges share nothing
    assert inside_fraction(W0, (0, 0, 224, 224)) == 1.0  # area 224^2, not 225^2


@pytest.mark.parametrize(
    ("box", "label"),
    [
        ((-10, -10, 500, 500), FOREGROUND),  # crop entirely inside the box
        ((300, 300, 400, 400), BACKGROUND),  # no overlap
        ((50, 50, 150, 150), BACKGROUND),  # small product inside the crop: 20 % inside
        ((0, 0, 224, 168), FOREGROUND),  # 75 %
    ],
)
def test_labels(box, label):
    assert label_for(W0, box) == label


def test_band_between_thresholds_is_unlabelled():
    box = (0, 0, 112, 224)  # 50 %
    assert label_for(W0, box, foreground_min_inside=0.7, background_max_inside=0.3) is None
    assert label_for(W0, (0, 0, 134, 224), 0.7, 0.3) is None  # 59.8 %
    assert label_for(W0, (0, 0, 168, 224), 0.7, 0.3) == FOREGROUND  # 75 %
    assert label_for(W0, (0, 0, 224, 224), 0.7, 0.3) == FOREGROUND
    assert label_for(W0, (0, 0, 67, 224), 0.7, 0.3) == BACKGROUND  # 29.9 %


# -- targets ----------------------------------------------------------------------------------
def test_box_deltas_and_flip():
    box = (100, 50, 400, 350)
    deltas = box_deltas(box, left=150, top=20)
    assert deltas == (-50, 30, 250, 330)  # negative and > 224 when the box sticks out
    assert flip_deltas(deltas) == (224 - 250, 30, 224 + 50, 330)
    assert flip_deltas(flip_deltas(deltas)) == deltas


def test_flipped_targets_match_flipped_pixels():
    """Draw a box, crop, mirror: the white columns of the mirrored crop are the flipped target."""
    img = np.zeros((224, 300, 3), np.uint8)
    img[20:200, 40:130] = 255  # box (40, 20, 130, 200) in a 300 x 224 photo
    spec_box = (40.0, 20.0, 130.0, 200.0)
    config = dataclasses.replace(PrepareConfig.tiny(), short_sides=(224,), crops_per_scale=100)
    specs = sample_crops("p", 300, 224, spec_box, config)
    pil = Image.fromarray(img)
    for spec, crop in zip(specs, render_crops(pil, specs), strict=True):
        dl, dt, dr, db = spec.target
        cols = np.flatnonzero(crop[100, :, 0] > 127)
        lo, hi = max(dl, 0), min(dr, WINDOW)
        if hi > lo:
            assert (cols.min(), cols.max() + 1) == (lo, hi), spec
        rows = np.flatnonzero(crop[:, int(np.clip((lo + hi) / 2, 0, 223)), 0] > 127)
        if hi > lo and len(rows):
            assert (rows.min(), rows.max() + 1) == (max(dt, 0), min(db, WINDOW))


# -- sampling ---------------------------------------------------------------------------------
def _cfg(**kw) -> PrepareConfig:
    base = dict(short_sides=(224,), crops_per_scale=1000, flips=False, image_format="png")
    return PrepareConfig(**{**base, **kw})


def test_border_crop_on_the_half_boundary():
    """448 x 224 photo, box = its left 112 columns: only the window at x=0 is half inside."""
    specs = sample_crops("p", 448, 224, (0, 0, 112, 224), _cfg())
    fg = [s for s in specs if s.label == FOREGROUND]
    bg = [s for s in specs if s.label == BACKGROUND]
    assert [(s.left, s.top) for s in fg] == [(0, 0)]
    assert fg[0].inside == 0.5 and fg[0].target == (0, 0, 112, 224)
    assert sorted(s.left for s in bg) == list(range(1, 448 - 224 + 1))  # up to the right border
    right = next(s for s in bg if s.left == 224)
    assert right.target == (-224, 0, -112, 224) and right.inside == 0.0


def test_half_inside_after_scaling_is_foreground():
    """338 x 338 photo, box = its lower half, scale 224: the window at the origin is exactly half
    inside (169 * 224 / 338 = 112), so foreground, as label_for says."""
    specs = sample_crops("x", 338, 338, (0, 169, 338, 338), _cfg(short_sides=(224,)))
    assert [(s.left, s.top, s.label, s.inside) for s in specs] == [(0, 0, FOREGROUND, 0.5)]
    assert label_for(specs[0].window, (0, 112, 224, 224)) == FOREGROUND


def test_box_at_the_right_border_never_half_inside():
    """Box (200, 0, 300, 224) in a 300 x 224 photo: at most 100/224 of a window is inside."""
    specs = sample_crops("p", 300, 224, (200, 0, 300, 224), _cfg())
    assert {s.label for s in specs} == {BACKGROUND}
    assert sorted(s.left for s in specs) == list(range(0, 77))
    border = next(s for s in specs if s.left == 76)  # window flush with the right border
    assert border.target == (124, 0, 224, 224)
    assert border.inside == pytest.approx(100 / 224)


def test_photo_exactly_one_window():
    specs = sample_crops("p", 224, 224, (0, 0, 224, 224), _cfg(flips=True))
    assert [(s.label, s.left, s.top, s.flipped, s.target) for s in specs] == [
        (FOREGROUND, 0, 0, False, (0, 0, 224, 224)),
        (FOREGROUND, 0, 0, True, (0, 0, 224, 224)),
    ]


def test_scales_resize_the_box_and_skip_too_small():
    config = _cfg(short_sides=(100, 448), crops_per_scale=3)
    specs = sample_crops("p", 300, 600, (30, 60, 270, 540), config)
    assert {s.short_side for s in specs} == {448}  # 100 px cannot hold a 224 window
    assert {s.size for s in specs} == {(448, 896)}
    f = 448 / 300
    for s in specs:  # box scaled by 448/300 in both axes
        box = (30 * f - s.left, 60 * f - s.top, 270 * f - s.left, 540 * f - s.top)
        assert s.target == pytest.approx(box)


def test_scaled_size_matches_resize_short_side():
    for w, h, s in [(300, 600, 448), (641, 479, 320), (1000, 333, 224)]:
        img, _ = resize_short_side(Image.new("RGB", (w, h)), s)
        assert scaled_size(w, h, s) == img.size


def test_per_scale_counts_flips_and_determinism():
    config = PrepareConfig(short_sides=(320, 448), crops_per_scale=5, flips=True)
    box = (0, 0, 640, 600)  # top half of a 640 x 1200 photo: both classes at both scales
    a = sample_crops("dress-1", 640, 1200, box, config)
    assert a == sample_crops("dress-1", 640, 1200, box, config)
    assert a != sample_crops("dress-2", 640, 1200, box, config)
    for side in (320, 448):
        for label in (FOREGROUND, BACKGROUND):
            group = [s for s in a if s.short_side == side and s.label == label]
            assert len(group) == 10  # 5 + 5 mirrored
            assert len({(s.left, s.top) for s in group}) == 5
            originals = [s for s in group if not s.flipped]
            mirrored = [s for s in group if s.flipped]
            assert [flip_deltas(s.target) for s in originals] == [s.target for s in mirrored]
    assert a != sample_crops("dress-1", 640, 1200, box, dataclasses.replace(config, seed=1))


# -- crop sets --------------------------------------------------------------------------------
def _groups(specs, crop_set):
    """(short_side, label) -> originals (no mirrored copies) of one crop set."""
    out: dict[tuple[int, int], list] = {}
    for s in specs:
        if crop_set in s.sets and not s.flipped:
            out.setdefault((s.short_side, s.label), []).append((s.left, s.top))
    return out


PHOTO = ("dress-1", 640, 1200, (0, 0, 640, 600))  # both classes at every scale below


def test_default_sets_are_the_old_single_list():
    """Empty regression settings: every crop of short_sides, foreground ones in both sets."""
    config = PrepareConfig(short_sides=(320, 448), crops_per_scale=5, flips=True)
    specs = sample_crops(*PHOTO, config)
    assert (config.regression_sides, config.regression_crops) == ((320, 448), 5)
    assert config.scales == (320, 448)
    for s in specs:
        assert s.sets == (
            {CLASSIFICATION, REGRESSION} if s.label == FOREGROUND else {CLASSIFICATION}
        )
    explicit = dataclasses.replace(
        config, regression_short_sides=(320, 448), regression_crops_per_scale=5
    )
    assert sample_crops(*PHOTO, explicit) == specs


def test_regression_scales_are_separate():
    config = PrepareConfig(
        short_sides=(320, 448), crops_per_scale=3, regression_short_sides=(256, 320), flips=True
    )
    assert config.scales == (320, 448, 256)
    specs = sample_crops(*PHOTO, config)
    reg, clf = _groups(specs, REGRESSION), _groups(specs, CLASSIFICATION)
    assert sorted(reg) == [(256, FOREGROUND), (320, FOREGROUND)]  # no 448, no background
    assert sorted(clf) == [
        (320, BACKGROUND),
        (320, FOREGROUND),
        (448, BACKGROUND),
        (448, FOREGROUND),
    ]
    assert all(len(v) == 3 for v in [*reg.values(), *clf.values()])
    assert reg[(320, FOREGROUND)] == clf[(320, FOREGROUND)]  # a shared scale shares its crops
    for s in specs:
        if s.short_side == 256:
            assert s.sets == {REGRESSION} and s.label == FOREGROUND
        if s.short_side == 448:
            assert s.sets == {CLASSIFICATION}
    mirrored = [s for s in specs if s.flipped]
    assert len(mirrored) == len(specs) // 2 and all(s.sets for s in mirrored)
    # the classification crops are those of short_sides alone
    alone = sample_crops(*PHOTO, dataclasses.replace(config, regression_short_sides=()))
    assert _groups(alone, CLASSIFICATION) == clf


@pytest.mark.parametrize("reg_crops", [2, 5, 8])
def test_regression_crops_per_scale(reg_crops):
    config = PrepareConfig(
        short_sides=(320, 448),
        crops_per_scale=5,
        regression_short_sides=(320,),
        regression_crops_per_scale=reg_crops,
        flips=False,
    )
    specs = sample_crops(*PHOTO, config)
    reg, clf = _groups(specs, REGRESSION), _groups(specs, CLASSIFICATION)
    assert {k: len(v) for k, v in reg.items()} == {(320, FOREGROUND): reg_crops}
    assert all(len(v) == 5 for v in clf.values()) and len(clf) == 4
    # one draw per scale and class: the smaller set takes the first of the larger one's crops
    small, large = sorted((set(reg[(320, FOREGROUND)]), set(clf[(320, FOREGROUND)])), key=len)
    assert small <= large
    # and the classification set is what it is without any regression settings
    plain = sample_crops(
        *PHOTO, dataclasses.replace(config, regression_short_sides=(), regression_crops_per_scale=0)
    )
    assert _groups(plain, CLASSIFICATION) == clf


def test_decode_size_covers_both_scale_lists():
    base = PrepareConfig(short_sides=(256, 352))
    assert decode_size(600, 400, base) == scaled_size(600, 400, 352)
    wider = dataclasses.replace(base, regression_short_sides=(448,))
    assert decode_size(600, 400, wider) == scaled_size(600, 400, 448)
    narrower = dataclasses.replace(base, regression_short_sides=(224,))
    assert decode_size(600, 400, narrower) == scaled_size(600, 400, 352)


@settings(max_examples=60, deadline=None)
@example(w=338, h=338, fx=0.0, fy=0.5, fw=1.0, fh=1.0)  # a window exactly half inside the box
@given(
    st.integers(224, 700),
    st.integers(224, 700),
    st.floats(0, 0.9),
    st.floats(0, 0.9),
    st.floats(0.05, 1),
    st.floats(0.05, 1),
)
def test_sampled_crops_are_in_bounds_and_correctly_labelled(w, h, fx, fy, fw, fh):
    left, top = fx * w, fy * h
    box = (left, top, min(w, left + fw * w), min(h, top + fh * h))
    config = _cfg(short_sides=(224, 300), crops_per_scale=4)
    for s in sample_crops("x", w, h, box, config):
        sw, sh = s.size
        assert 0 <= s.left <= sw - WINDOW and 0 <= s.top <= sh - WINDOW
        sbox = (box[0] * sw / w, box[1] * sh / h, box[2] * sw / w, box[3] * sh / h)
        assert label_for(s.window, sbox) == s.label
        assert s.target == pytest.approx(box_deltas(sbox, s.left, s.top))


# -- pixels -----------------------------------------------------------------------------------
def test_render_crops_cuts_the_resized_photo():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    spec = CropSpec(320, (427, 320), 150, 60, FOREGROUND, 1.0, (0, 0, 0, 0), frozenset())
    flipped = dataclasses.replace(spec, flipped=True)
    a, b = render_crops(photo, [spec, flipped])
    resized = np.asarray(photo.resize((427, 320), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(a, resized[60:284, 150:374])
    np.testing.assert_array_equal(b, a[:, ::-1])
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8


def test_product_crop_scales_the_box_to_a_draft_decode():
    full = np.zeros((400, 600, 3), np.uint8)
    full[100:300, 150:450] = 200
    box = (150, 100, 450, 300)
    a = product_crop(Image.fromarray(full), box, (600, 400))
    half = Image.fromarray(full).resize((300, 200), Image.Resampling.NEAREST)
    b = product_crop(half, box, (600, 400))  # as if JPEG draft-decoded at half size
    assert a.shape == b.shape == (224, 224, 3)
    assert a[2:-2, 2:-2].min() == 200 and b[2:-2, 2:-2].min() == 200  # edges blend bilinearly


def test_encode_decode_round_trip():
    px = np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(px, "png")), px)
    jpeg = decode_image(encode_image(px, "jpeg", 95))
    assert jpeg.shape == px.shape


# -- settings ---------------------------------------------------------------------------------
def test_config_defaults_help_and_tiny():
    config = PrepareConfig()
    assert (config.test_fraction, config.seed, config.short_sides) == (0.1, 0, (320, 448))
    assert (config.crops_per_scale, config.flips, config.foreground_min_inside) == (5, True, 0.5)
    assert all(f.metadata.get("help") for f in dataclasses.fields(PrepareConfig))
    assert PrepareConfig.tiny().short_sides
    assert config.as_dict()["short_sides"] == [320, 448]
    assert (config.regression_short_sides, config.regression_crops_per_scale) == ((), 0)
    assert config.as_dict()["regression_short_sides"] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"test_fraction": 1.5},
        {"short_sides": ()},
        {"short_sides": (0,)},
        {"crops_per_scale": 0},
        {"regression_short_sides": (256, 0)},
        {"regression_short_sides": (True,)},
        {"regression_crops_per_scale": -1},
        {"foreground_min_inside": 0.0},
        {"background_max_inside": 2.0},
        {"image_format": "gif"},
        {"jpeg_quality": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(
        InvalidInput, match=rf"invalid \[prepare\] settings: {next(iter(bad))} must"
    ):
        PrepareConfig(**bad)
