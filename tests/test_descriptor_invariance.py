"""The descriptor's invariances: mirror images encode alike, plain borders are trimmed away."""

from __future__ import annotations

import numpy as np
import pytest
from _index_fakes import photo
from PIL import Image

from tiefjax.images import content_box, whole_box


def test_mirror_invariant_encoder_gives_a_photo_and_its_mirror_the_same_features():
    from tiefjax.index.encode import FeatureEncoder
    from tiefjax.nets.alexnet import init_encoder_params

    params = init_encoder_params(0)
    windows = np.stack([np.asarray(photo(i).resize((224, 224))) for i in range(3)])
    mirrored = windows[:, :, ::-1].copy()
    plain = FeatureEncoder(params, "t", batch_size=4)
    invariant = FeatureEncoder(params, "t", batch_size=4, mirror=True)
    a, b = invariant(windows), invariant(mirrored)
    assert np.abs(a - b).max() < 1e-5
    # per-location unit length, like any stored map (the descriptor's scaling assumes it)
    norms = np.linalg.norm(a.reshape(3, 121, 256), axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    # without the setting a mirror image is a different descriptor
    p, q = plain(windows), plain(mirrored)
    assert np.abs(p - q).max() > 0.1


def _padded(product: Image.Image, pad: tuple[int, int, int, int], colour) -> Image.Image:
    left, top, right, bottom = pad
    canvas = Image.new("RGB", (product.width + left + right, product.height + top + bottom), colour)
    canvas.paste(product, (left, top))
    return canvas


@pytest.mark.parametrize("colour", [(255, 255, 255), (20, 20, 20), (200, 120, 40)])
def test_content_box_trims_plain_padding_to_the_photo(colour):
    rng = np.random.default_rng(3)  # a busy photo: no plain line of its own to trim
    product = Image.fromarray(rng.integers(0, 256, (400, 300, 3), dtype=np.uint8))
    img = _padded(product, (120, 30, 0, 200), colour)
    left, top, right, bottom = content_box(img)
    # within a few pixels (the search runs on a copy at most 256 px, plus one line of margin)
    assert left == pytest.approx(120, abs=6) and top == pytest.approx(30, abs=6)
    assert right == pytest.approx(img.width, abs=6) and bottom == pytest.approx(430, abs=6)


def test_content_box_leaves_textured_and_blank_images_whole():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (200, 150, 3), dtype=np.uint8))
    assert content_box(noise) == (0.0, 0.0, 150.0, 200.0)
    blank = Image.new("RGB", (150, 200), (240, 240, 240))
    assert content_box(blank) == (0.0, 0.0, 150.0, 200.0)
    assert whole_box(_padded(photo(1), (40, 40, 40, 40), (255, 255, 255)), trim=False) == (
        0.0,
        0.0,
        176.0,
        152.0,
    )
