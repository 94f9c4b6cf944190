"""Image decoding: any format or oddity in a catalog becomes upright RGB or a clear error."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tiefjax.errors import InvalidInput
from tiefjax.images import (
    crop_resize,
    image_size,
    list_image_files,
    load_rgb,
    load_rgb_scaled,
    load_window,
    normalize,
    prefetch,
    resize_short_side,
    scale_box,
    window_of,
)


def two_tone(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue: shows where the image went after a rotation."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    two_tone(40, 20).save(path, exif=exif, quality=95)
    assert image_size(path) == (20, 40)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 40)
    px = np.asarray(img).astype(int)
    assert px[2, 10, 0] > 200 and px[2, 10, 2] < 60  # red on top after rotation
    assert px[-3, 10, 2] > 200 and px[-3, 10, 0] < 60  # blue at the bottom
    # draft decoding respects the rotation too
    big = tmp_path / "rot_big.jpg"
    two_tone(1600, 800).save(big, exif=exif, quality=90)
    small = load_rgb(big, target_size=(100, 200))
    assert small.size[0] >= 100 and small.size[1] >= 200 and small.size[1] > small.size[0]
    assert small.size[1] <= 800  # really drafted
    box = (100.0, 700.0, 700.0, 900.0)  # upright pixels, across the red/blue edge at y=800
    win = load_window(big, box=box, size=48)
    exact = np.asarray(crop_resize(load_rgb(big), box, (48, 48))).astype(int)
    assert np.abs(win.astype(int) - exact).mean() < 4


@pytest.mark.parametrize(
    "mode, fmt, suffix",
    [
        ("L", "JPEG", "jpg"),
        ("L", "PNG", "png"),
        ("1", "PNG", "png"),
        ("CMYK", "JPEG", "jpg"),
        ("P", "PNG", "png"),
        ("RGB", "WEBP", "webp"),
        ("LA", "PNG", "png"),
    ],
)
def test_modes_become_rgb(tmp_path, mode, fmt, suffix):
    base = two_tone(64, 48)
    img = base.convert(mode) if mode != "P" else base.quantize(8)
    path = tmp_path / f"x.{suffix}"
    img.save(path, fmt)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (64, 48)
    window = load_window(path, size=32)
    assert window.shape == (32, 32, 3) and window.dtype == np.uint8
    if mode in ("P", "RGB", "CMYK"):
        px = np.asarray(out).astype(int)
        assert px[24, 5, 0] > 180 and px[24, 60, 2] > 180  # colours survive


def test_cmyk_jpeg_colours(tmp_path):
    path = tmp_path / "cmyk.jpg"
    two_tone(64, 48).convert("CMYK").save(path, quality=95)
    for target in (None, (16, 12)):
        px = np.asarray(load_rgb(path, target_size=target)).astype(int)
        assert px.shape[2] == 3
        assert px[px.shape[0] // 2, 2, 0] > 180 and px[px.shape[0] // 2, 2, 2] < 80


def test_png_alpha_on_white(tmp_path):
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255  # red, but only the left half opaque
    arr[:, :5, 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(path)
    px = np.asarray(load_rgb(path))
    assert tuple(px[5, 2]) == (255, 0, 0)
    assert tuple(px[5, 8]) == (255, 255, 255)
    pal = two_tone(8, 8).quantize(4)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert load_rgb(tmp_path / "p.png").mode == "RGB"


def test_sixteen_bit_grayscale_png_keeps_contrast(tmp_path):
    arr = np.zeros((8, 8), np.uint16)
    arr[:, 4:] = 40000  # ~61% grey, not clipped to white
    arr[:, :4] = 10000
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    px = np.asarray(load_rgb(path)).astype(int)
    assert 140 < px[0, 6, 0] < 170 and 30 < px[0, 1, 0] < 50


def test_webp_rgba_and_bytes(tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (30, 20), (0, 255, 0, 128)).save(buf, "WEBP")
    img = load_rgb(buf.getvalue())
    assert img.size == (30, 20) and img.mode == "RGB"
    assert image_size(buf.getvalue()) == (30, 20)


def test_mpo_camera_jpeg_is_accepted(tmp_path):
    path = tmp_path / "camera.jpg"
    frames = [two_tone(64, 48), two_tone(64, 48).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(path).format == "MPO"
    assert load_rgb(path).size == (64, 48)
    assert load_window(path, size=16).shape == (16, 16, 3)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    good = io.BytesIO()
    two_tone(400, 300).save(good, "JPEG", quality=90)
    data = good.getvalue()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "empty.webp").write_bytes(b"")
    png = io.BytesIO()
    two_tone(400, 300).save(png, "PNG")
    (tmp_path / "truncated.png").write_bytes(png.getvalue()[:-200])
    Image.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    for name in ("truncated.jpg", "garbage.jpg", "text.png", "empty.webp", "truncated.png"):
        with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
            load_window(tmp_path / name)
        with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
            load_rgb(tmp_path / name, target_size=(50, 50))
    with pytest.raises(InvalidInput, match="GIF"):
        load_rgb(tmp_path / "anim.gif")
    with pytest.raises(InvalidInput, match="not found"):
        load_rgb(tmp_path / "absent.jpg")
    with pytest.raises(InvalidInput, match="my upload"):
        load_rgb(data[:100], name="my upload")


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(path)  # 200 Mpx, a few KB on disk
    with pytest.raises(InvalidInput, match="bomb.png.*pixels"):
        load_rgb(path)
    with pytest.raises(InvalidInput, match="pixels"):
        image_size(path)


def test_draft_mode_result_size(tmp_path):
    path = tmp_path / "big.jpg"
    two_tone(1600, 1200).save(path, quality=90)
    img = load_rgb(path, target_size=(224, 224))
    assert img.size == (400, 300)  # 1/4 scale: the smallest DCT scale still >= the target
    assert load_rgb(path, target_size=(900, 500)).size == (1600, 1200)  # < 2x: no draft
    assert load_rgb(path).size == (1600, 1200)
    window = load_window(path, size=224)
    full = np.asarray(crop_resize(load_rgb(path), None, (224, 224))).astype(int)
    assert window.shape == (224, 224, 3)
    assert np.abs(window.astype(int) - full).mean() < 3


def test_scaled_loading_decodes_only_as_big_as_needed_and_maps_back(tmp_path):
    path = tmp_path / "big.jpg"
    two_tone(1600, 1200).save(path, quality=90)
    img, scale = load_rgb_scaled(path, 224)
    assert img.size == (400, 300) and scale == (4.0, 4.0)
    assert scale_box((10, 20, 30, 40), scale) == (40.0, 80.0, 120.0, 160.0)
    assert load_rgb_scaled(path, 1300)[1] == (1.0, 1.0)  # bigger than the photo: whole
    # EXIF-rotated: the scale is per upright axis
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rot.jpg"
    two_tone(1600, 800).save(rotated, exif=exif, quality=90)
    img, scale = load_rgb_scaled(rotated, 200)
    assert img.size == (200, 400) and scale == (4.0, 4.0)
    # other formats decode whole, then shrink by a whole factor to the same bound
    png = tmp_path / "big.png"
    two_tone(1600, 1200).save(png)
    img, scale = load_rgb_scaled(png, 224)
    assert img.size == (320, 240) and scale == (5.0, 5.0)  # 1200 // 224 = 5
    assert load_rgb_scaled(png, 700)[0].size == (1600, 1200)  # under 2x the need: kept
    strip = tmp_path / "strip.png"
    Image.new("L", (20000, 2000), 128).save(strip)
    img, scale = load_rgb_scaled(strip, 448)
    assert img.size == (5000, 500) and img.mode == "RGB" and scale == (4.0, 4.0)


def test_a_small_box_of_a_shrunken_decode_is_cut_again_from_the_source(tmp_path):
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(path, quality=90)
    img, scale = load_rgb_scaled(path, 224)  # 400x300, a quarter of each side
    small = (40.0, 30.0, 80.0, 60.0)  # 40x30 here, 160x120 in the photo: under 64 here
    again = window_of(img, small, 64, scale, path)
    np.testing.assert_array_equal(again, load_window(path, scale_box(small, scale), 64))
    enlarged = np.asarray(crop_resize(img, small, (64, 64)))
    assert np.abs(again.astype(int) - enlarged).mean() > 5  # the sharper cut differs
    big = (0.0, 0.0, 300.0, 200.0)  # enough pixels in the shrunken copy: cut from it
    np.testing.assert_array_equal(
        window_of(img, big, 64, scale, path), np.asarray(crop_resize(img, big, (64, 64)))
    )
    np.testing.assert_array_equal(  # without a source there is nothing to cut again from
        window_of(img, small, 64, scale), enlarged
    )


def test_window_of_a_box(tmp_path):
    path = tmp_path / "big.jpg"
    two_tone(1600, 1200).save(path, quality=90)
    box = (700.0, 100.0, 900.5, 1100.0)  # straddles the red/blue edge at x=800
    win = load_window(path, box=box, size=64)
    exact = np.asarray(crop_resize(load_rgb(path), box, (64, 64))).astype(int)
    assert win.shape == (64, 64, 3)
    assert np.abs(win.astype(int) - exact).mean() < 4
    assert win[32, 5, 0] > 200 and win[32, 60, 2] > 200
    # boxes slightly outside the image are clipped; empty ones are refused
    assert load_window(path, box=(-3.0, -2.0, 1603.0, 1201.0), size=32).shape == (32, 32, 3)
    with pytest.raises(InvalidInput, match="box"):
        load_window(path, box=(1700.0, 0.0, 1800.0, 10.0), size=32)
    with pytest.raises(InvalidInput, match="box"):
        crop_resize(load_rgb(path), (10.0, 10.0, 10.0, 20.0), (8, 8))


def test_resize_short_side_and_normalize():
    img, scale = resize_short_side(Image.new("RGB", (400, 200)), 100)
    assert img.size == (200, 100) and scale == 0.5
    px = np.full((2, 2, 3), 255, np.uint8)
    out = normalize(px)
    assert out.dtype == np.float32
    np.testing.assert_allclose(
        out[0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-6
    )


def test_list_image_files(tmp_path):
    for name in ("b.JPG", "a.png", "c.webp", "notes.txt", "._a.jpg", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.JPG", "c.webp"]
    with pytest.raises(InvalidInput):
        list_image_files(tmp_path / "a.png")


def test_prefetch_keeps_order_and_reports_errors_per_item():
    def work(i: int) -> int:
        time.sleep(0.002 * ((7 * i) % 5))  # finish out of order
        if i % 4 == 3:
            raise InvalidInput(f"item {i} is bad")
        return i * i

    out = list(prefetch(work, range(20), workers=3, depth=4))
    assert [i for i, _ in out] == list(range(20))
    for i, result in out:
        if i % 4 == 3:
            assert isinstance(result, InvalidInput) and str(i) in str(result)
        else:
            assert result == i * i


def test_prefetch_is_bounded_and_stops_early():
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    it = prefetch(work, range(10_000), workers=2, depth=3)
    first = [next(it) for _ in range(2)]
    assert first == [(0, 0), (1, 1)]
    it.close()
    assert len(started) < 20  # never ran far ahead of the consumer
    assert list(prefetch(work, [], workers=2, depth=0)) == []


def test_prefetch_surfaces_a_failing_item_source():
    def items():
        yield 1
        yield 2
        raise RuntimeError("listing failed")

    got = []
    with pytest.raises(RuntimeError, match="listing failed"):
        for item, _ in prefetch(lambda x: x, items(), workers=2, depth=2):
            got.append(item)
    assert got == [1, 2]
