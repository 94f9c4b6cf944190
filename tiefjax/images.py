"""Image decoding for every consumer: any JPEG/PNG/WebP to upright RGB, resized, normalised.

Decoding is the CPU bottleneck of encoding a catalog, so JPEGs are decoded in draft mode (DCT
scaling) when the target is much smaller than the photo, and :func:`prefetch` overlaps decoding
in worker threads (Pillow releases the GIL) with the device work of the caller.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from tiefjax.errors import InvalidInput

#: ImageNet statistics used by torchvision's AlexNet (RGB, on [0, 1] pixel values).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Refuse images above this many pixels (decompression bombs); Pillow's own limit is similar.
MAX_PIXELS = 64_000_000

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels
T = TypeVar("T")
R = TypeVar("R")


def open_image(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Image.Image:
    """Open a file path or in-memory bytes as an image, lazily; clear error when it is not one."""
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as err:
        raise InvalidInput(f"{label}: file not found") from err
    except (Image.UnidentifiedImageError, OSError) as err:
        raise InvalidInput(
            f"{label}: not a readable image ({err.__class__.__name__}); "
            "use a JPEG, PNG or WebP file"
        ) from err
    if img.format not in SUPPORTED_FORMATS:
        raise InvalidInput(f"{label}: {img.format} images are not supported; use JPEG, PNG or WebP")
    if img.width * img.height > MAX_PIXELS:
        raise InvalidInput(
            f"{label}: {img.width}x{img.height} pixels is more than the {MAX_PIXELS:,} allowed"
        )
    return img


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    orientation = img.getexif().get(0x0112, 1)
    return (img.height, img.width) if orientation in (5, 6, 7, 8) else (img.width, img.height)


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

    Grayscale, CMYK, palette and alpha images become RGB (alpha composited on white).
    ``target_size`` (width, height) lets JPEG decoding use draft mode when the result will be at
    least 2x smaller; the returned image is then still larger than or equal to the target.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    img = open_image(source, name=label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if target_size is not None and img.format == "JPEG":
                tw, th = target_size
                if _oriented_size(img) != img.size:  # stored rotated: draft in stored axes
                    tw, th = th, tw
                img.draft("RGB", (tw, th))
            img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise InvalidInput(
            f"{label}: the image data is corrupt or truncated ({err}); re-export or remove the file"
        ) from err
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def crop_resize(img: Image.Image, box: Box | None, size: tuple[int, int]) -> Image.Image:
    """Crop ``box`` (pixels, may be fractional) and resize to ``size`` (width, height)."""
    if box is None:
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    return img.resize(size, Image.Resampling.BILINEAR, box=tuple(map(float, box)))


def load_window(
    source: str | os.PathLike[str] | bytes,
    box: Box | None = None,
    size: int = 224,
    name: str | None = None,
) -> np.ndarray:
    """Decode, crop ``box`` (original-image pixels) and resize to ``size``x``size`` uint8 RGB."""
    if box is None:
        img = load_rgb(source, target_size=(size, size), name=name)
        return np.asarray(crop_resize(img, None, (size, size)))
    full = load_rgb(source, name=name)
    return np.asarray(crop_resize(full, box, (size, size)))


def resize_short_side(img: Image.Image, short_side: int) -> tuple[Image.Image, float]:
    """Resize so the shorter side is ``short_side``; returns the image and the scale factor."""
    scale = short_side / min(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR), scale


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 with ImageNet mean/std; works on NumPy and JAX arrays."""
    return (pixels / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (by suffix) directly inside ``folder``, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder of images")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 2, depth: int = 8
) -> Iterator[tuple[T, R | BaseException]]:
    """Ordered ``(item, fn(item))`` with ``fn`` running ahead in ``workers`` threads.

    At most ``depth`` results wait in memory, so a million files stream. An exception raised by
    ``fn`` for one item is yielded in place of its result (the caller reports and skips it).
    """
    pending: queue.Queue[tuple[T, Future[R]] | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def feed(pool: ThreadPoolExecutor) -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                pending.put((item, pool.submit(fn, item)))
        finally:
            pending.put(None)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        feeder = threading.Thread(target=feed, args=(pool,), daemon=True)
        feeder.start()
        try:
            while (entry := pending.get()) is not None:
                item, future = entry
                try:
                    yield item, future.result()
                except Exception as err:  # reported per item by the caller
                    yield item, err
        finally:
            stop.set()
            while feeder.is_alive():  # unblock the feeder so the pool can shut down
                try:
                    pending.get_nowait()
                except queue.Empty:
                    feeder.join(timeout=0.01)
