"""Image decoding for every consumer: any JPEG/PNG/WebP to upright RGB, resized, normalised.

Decoding is the CPU bottleneck of encoding a catalog, so JPEGs are decoded in draft mode (DCT
scaling) when the target is much smaller than the photo, and :func:`prefetch` overlaps decoding
in worker threads (Pillow releases the GIL) with the device work of the caller.
"""

from __future__ import annotations

import io
import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image, ImageOps

from tiefjax.errors import InvalidInput

if TYPE_CHECKING:
    import jax

#: ImageNet statistics used by torchvision's AlexNet (RGB, on [0, 1] pixel values).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: Pillow formats accepted; MPO is how Pillow names camera JPEGs carrying extra frames.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Refuse images above this many pixels (decompression bombs); Pillow's own limit is similar.
MAX_PIXELS = 64_000_000

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels
T = TypeVar("T")
R = TypeVar("R")
Pixels = TypeVar("Pixels", np.ndarray, "jax.Array")


def _label(source: str | os.PathLike[str] | bytes, name: str | None) -> str:
    return name or (str(source) if not isinstance(source, bytes) else "uploaded image")


def open_image(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Image.Image:
    """Open a file path or in-memory bytes as an image, lazily; clear error when it is not one."""
    label = _label(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check below
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as err:
        raise InvalidInput(f"{label}: file not found") from err
    except Image.DecompressionBombError as err:
        raise InvalidInput(
            f"{label}: more than the {MAX_PIXELS:,} pixels allowed (a decompression bomb?)"
        ) from err
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InvalidInput(
            f"{label}: not a readable image ({err.__class__.__name__}); "
            "use a JPEG, PNG or WebP file"
        ) from err
    problem = None
    if img.format not in SUPPORTED_FORMATS:
        problem = f"{label}: {img.format} images are not supported; use JPEG, PNG or WebP"
    elif img.width * img.height > MAX_PIXELS:
        problem = (
            f"{label}: {img.width}x{img.height} pixels is more than the {MAX_PIXELS:,} allowed"
        )
    if problem is not None:
        img.close()
        raise InvalidInput(problem)
    return img


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: treat as upright rather than refuse the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    rotated = _orientation(img) in (5, 6, 7, 8)
    return (img.height, img.width) if rotated else (img.width, img.height)


def image_size(source: str | os.PathLike[str] | bytes) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header only."""
    with open_image(source) as img:
        return _oriented_size(img)


def load_rgb(
    source: str | os.PathLike[str] | bytes,
    target_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode fully into an upright RGB image (EXIF orientation applied).

    Grayscale (8 or 16 bit), CMYK, palette and alpha images become RGB (alpha composited on
    white). ``target_size`` (width, height) lets JPEG decoding use draft mode when the result
    will be at least 2x smaller; the returned image is then still larger than or equal to the
    target.
    """
    label = _label(source, name)
    return _decode(open_image(source, name=label), label, target_size)


def load_rgb_scaled(
    source: str | os.PathLike[str] | bytes, short_side: int, name: str | None = None
) -> tuple[Image.Image, tuple[float, float]]:
    """Decode for work that sees the photo at ``short_side`` pixels at most (box extraction).

    JPEGs are draft-decoded at the smallest DCT scale whose shorter side stays >= ``short_side``
    (a 4000x3000 phone photo decodes ~5x faster at 1/4 scale); other formats decode whole. Any
    result still at least twice the need on its shorter side (a PNG or WebP, a JPEG past its
    1/8 draft scale) is then shrunk by a whole factor to the same bound, so a decoded photo
    waiting for its search, or a pretraining view, holds what the work needs (a 20000x2000 PNG:
    5000x500, 7.5 MB, not 120 MB).
    Returns the upright RGB image and ``(sx, sy)``, original pixels per decoded pixel: boxes
    found in the image map back to the photo with :func:`scale_box`.
    """
    label = _label(source, name)
    img = open_image(source, name=label)
    width, height = _oriented_size(img)
    factor = short_side / min(width, height)
    target = (math.ceil(width * factor), math.ceil(height * factor)) if factor < 1 else None
    out = _decode(img, label, target)
    shrink = min(out.size) // max(1, short_side)
    if shrink >= 2:
        out = out.reduce(shrink)
    return out, (width / out.width, height / out.height)


def scale_box(box: Any, scale: tuple[float, float]) -> Box:
    """``box`` with x multiplied by ``scale[0]`` and y by ``scale[1]``."""
    left, top, right, bottom = float_box(box)
    sx, sy = scale
    return left * sx, top * sy, right * sx, bottom * sy


def _decode(img: Image.Image, label: str, target_size: tuple[int, int] | None) -> Image.Image:
    """Load an opened image (draft-decoding JPEGs towards ``target_size``) as upright RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            orientation = _orientation(img)
            if target_size is not None and img.format in ("JPEG", "MPO"):
                tw, th = (max(1, int(v)) for v in target_size)
                if orientation in (5, 6, 7, 8):  # stored rotated: draft in stored axes
                    tw, th = th, tw
                img.draft("RGB", (tw, th))
            img.load()
            out = ImageOps.exif_transpose(img) if orientation != 1 else img
            out = _to_rgb(out)
    except Exception as err:  # anything a damaged file makes Pillow raise
        img.close()
        raise InvalidInput(
            f"{label}: the image data is corrupt or truncated "
            f"({err.__class__.__name__}: {err}); re-export or remove the file"
        ) from err
    if out is not img:
        img.close()
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":  # 16-bit grayscale PNG: scale, don't clip
        wide = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if img.mode.startswith("I") else max(float(wide.max()), 1.0)
        img = Image.fromarray(np.clip(wide * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def float_box(values: Any) -> Box:
    """Four numbers (left, top, right, bottom; NumPy scalars, say), or an object with an
    ``as_tuple()`` of them (the store's Box), as a box of Python floats."""
    if hasattr(values, "as_tuple"):
        values = values.as_tuple()
    left, top, right, bottom = (float(v) for v in values)
    return left, top, right, bottom


def clip_box(box: Box, width: int, height: int, label: str = "box") -> Box:
    """``box`` clipped to a ``width`` x ``height`` image; InvalidInput when nothing is left."""
    left, top, right, bottom = float_box(box)
    clipped = (max(0.0, left), max(0.0, top), min(float(width), right), min(float(height), bottom))
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise InvalidInput(
            f"{label} ({left:g}, {top:g}, {right:g}, {bottom:g}) is empty or outside the "
            f"{width}x{height} image; boxes are (left, top, right, bottom) in pixels"
        )
    return clipped


def crop_resize(img: Image.Image, box: Box | None, size: tuple[int, int]) -> Image.Image:
    """Crop ``box`` (pixels, may be fractional, clipped to the image) and resize to ``size``."""
    if box is None:
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    box = clip_box(box, img.width, img.height)
    return img.resize(size, Image.Resampling.BILINEAR, box=box)


def load_window(
    source: str | os.PathLike[str] | bytes,
    box: Box | None = None,
    size: int = 224,
    name: str | None = None,
) -> np.ndarray:
    """Decode, crop ``box`` (original-image pixels) and resize to ``size``x``size`` uint8 RGB.

    JPEGs are draft-decoded at the smallest DCT scale that still leaves the box at least
    ``size`` pixels on each side, so small windows of big photos decode several times faster.
    """
    label = _label(source, name)
    img = open_image(source, name=label)
    if box is None:
        full = _decode(img, label, (size, size))
        return np.asarray(crop_resize(full, None, (size, size)))
    width, height = _oriented_size(img)
    try:
        left, top, right, bottom = clip_box(box, width, height)
    except InvalidInput:
        img.close()
        raise
    need = (
        math.ceil(width * size / (right - left)),
        math.ceil(height * size / (bottom - top)),
    )
    full = _decode(img, label, need)
    sx, sy = full.width / width, full.height / height
    scaled = (left * sx, top * sy, right * sx, bottom * sy)
    return np.asarray(crop_resize(full, scaled, (size, size)))


def window_of(
    img: Image.Image,
    box: Box | None,
    size: int,
    scale: tuple[float, float] = (1.0, 1.0),
    source: str | os.PathLike[str] | bytes | None = None,
    name: str | None = None,
) -> np.ndarray:
    """The ``size``x``size`` uint8 window of ``box`` (``img``'s pixels; None = the whole image).

    ``img`` may be a smaller draft decode of ``source`` (:func:`load_rgb_scaled`; ``scale`` maps
    it back). Where the box has fewer than ``size`` pixels on a side in ``img``, the window is cut
    from ``source`` again at the resolution it needs (:func:`load_window`), so a small product is
    not enlarged from a shrunken copy and gets the window an annotated box of it would get.
    """
    if box is not None and source is not None and scale != (1.0, 1.0):
        left, top, right, bottom = float_box(box)
        if min(right - left, bottom - top) < size:
            return load_window(source, scale_box(box, scale), size, name=name)
    return np.asarray(crop_resize(img, box, (size, size)))


#: Trimming: the backdrop colours are those covering at least ``BACKDROP_SHARE`` of the image's
#: outer ring (at most three: a flat padding, a studio backdrop, the white corners a rotation
#: leaves); a line is plain when ``BORDER_PLAIN_SHARE`` of its pixels are within
#: ``BORDER_TOLERANCE`` (0-255, any channel) of one of them. A textured border has no such colour
#: and is left alone.
BACKDROP_SHARE = 0.2
BORDER_PLAIN_SHARE = 0.98
BORDER_TOLERANCE = 24
_TRIM_LOOK = 160  # borders are found on a copy about this big (a few ms a photo)


def _backdrop(a: np.ndarray) -> np.ndarray:
    """The backdrop colours of ``a`` (h, w, 3) as (k, 3), k in 0..3 (see ``BACKDROP_SHARE``)."""
    ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bins, inverse, counts = np.unique(ring // 32, axis=0, return_inverse=True, return_counts=True)
    common = np.argsort(counts)[::-1][:3]
    keep = [c for c in common if counts[c] >= BACKDROP_SHARE * len(ring)]
    return np.array([np.median(ring[inverse.ravel() == c], axis=0) for c in keep]).reshape(-1, 3)


def _leading(flags: np.ndarray) -> int:
    """How many of ``flags`` are True from the first on."""
    return len(flags) if flags.all() else int(np.argmin(flags))


def _trim_once(a: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of ``a`` (h, w, 3) left when its plain lines are cut."""
    h, w = a.shape[:2]
    back = _backdrop(a)
    if not len(back):
        return 0, h, 0, w
    near = (np.abs(a[:, :, None, :] - back[None, None]).max(axis=-1) <= BORDER_TOLERANCE).any(-1)
    rows, cols = near.mean(axis=1) >= BORDER_PLAIN_SHARE, near.mean(axis=0) >= BORDER_PLAIN_SHARE
    return _leading(rows), h - _leading(rows[::-1]), _leading(cols), w - _leading(cols[::-1])


def content_box(img: Image.Image, rounds: int = 3) -> Box:
    """The box of ``img`` left when plain borders (letterboxing, padding on a flat colour) are
    trimmed from each side, again on what is left (padding around a photo on a plain backdrop
    goes in two rounds), at most ``rounds`` times; the whole image when that would leave under
    an eighth of a side."""
    w, h = img.size
    small = img.convert("RGB").reduce(max(1, math.ceil(max(w, h) / _TRIM_LOOK)))
    a = np.asarray(small, np.int16)
    sh, sw = a.shape[:2]
    top, bottom, left, right = 0, sh, 0, sw
    for _ in range(rounds):
        t, b, lo, hi = _trim_once(a[top:bottom, left:right])
        if b - t < sh / 8 or hi - lo < sw / 8:
            break
        if (t, b, lo, hi) == (0, bottom - top, 0, right - left):
            break
        top, bottom, left, right = top + t, top + b, left + lo, left + hi
    if (top, bottom, left, right) == (0, sh, 0, sw):
        return (0.0, 0.0, float(w), float(h))
    sx, sy = w / sw, h / sh
    # a reduced line mixing border and content counts as content: no pixel of it is cut
    return (left * sx, top * sy, min(float(w), right * sx), min(float(h), bottom * sy))


def whole_box(img: Image.Image, trim: bool) -> Box:
    """The box encoded when a photo is used whole: all of it, or its plain borders trimmed
    (``trim``). Index and queries both take it, so they see alike."""
    return content_box(img) if trim else (0.0, 0.0, float(img.width), float(img.height))


def resize_short_side(img: Image.Image, short_side: int) -> tuple[Image.Image, float]:
    """Resize so the shorter side is ``short_side``; returns the image and the scale factor."""
    scale = short_side / min(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR), scale


def normalize(pixels: Pixels) -> Pixels:
    """uint8 RGB (..., 3) -> float32 with ImageNet mean/std; works on NumPy and JAX arrays."""
    return (pixels / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD


def link_outside(path: Path) -> Path | None:
    """Where ``path`` really leads when a symbolic link takes it out of the folder holding it
    (a catalog photo must stay in the images folder); None when it stays inside."""
    target = path.resolve()
    return None if target.is_relative_to(path.parent.resolve()) else target


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (by suffix) directly inside ``folder``, sorted by name.

    Hidden files are skipped (macOS ``._photo.jpg`` resource forks are not images).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder of images")
    return sorted(
        p
        for p in root.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 2, depth: int = 8
) -> Iterator[tuple[T, R | BaseException]]:
    """Ordered ``(item, fn(item))`` with ``fn`` running ahead in ``workers`` threads.

    At most ``depth`` results wait in memory, so a million files stream. An exception raised by
    ``fn`` for one item is yielded in place of its result (the caller reports and skips it); an
    exception raised while iterating ``items`` is re-raised to the caller after the items before
    it. Closing the iterator early cancels the work not yet started.
    """
    pending: queue.Queue[tuple[T, Future[R]] | None] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    source_error: list[BaseException] = []

    def feed(pool: ThreadPoolExecutor) -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                pending.put((item, pool.submit(fn, item)))
        except BaseException as err:  # handed to the consumer, not lost in this thread
            source_error.append(err)
        finally:
            pending.put(None)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tiefjax-prefetch")
    feeder = threading.Thread(target=feed, args=(pool,), daemon=True)
    feeder.start()
    try:
        while (entry := pending.get()) is not None:
            item, future = entry
            try:
                yield item, future.result()
            except Exception as err:  # reported per item by the caller
                yield item, err
        if source_error:
            raise source_error[0]
    finally:
        stop.set()
        while feeder.is_alive():  # unblock the feeder so the pool can shut down
            try:
                entry = pending.get_nowait()
                if entry is not None:
                    entry[1].cancel()
            except queue.Empty:
                feeder.join(timeout=0.01)
        while True:  # cancel what is queued but not started
            try:
                entry = pending.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                entry[1].cancel()
        pool.shutdown(wait=True, cancel_futures=True)
