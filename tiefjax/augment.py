"""The changes catalog photos undergo when they are copied: mirrored, cropped, padded, rescaled,
re-compressed, colour-shifted, slightly rotated.

One set of transforms serves two jobs: :func:`copy_of` makes the seeded copies the
copy-detection evaluation searches for (``scripts/bench/copydetect.py``), and
:func:`random_view` draws the augmented views ``tiefjax pretrain`` learns from, so the encoder
is trained on the very changes it is measured on. Every transform is a pure function of the
photo and a NumPy generator: the same seed gives the same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]


def mirror(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Left-right mirror (shop photos of the same dress are often flipped)."""
    return ImageOps.mirror(img)


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 70-90 % of each side at a random offset."""
    w, h = img.size
    cw, ch = (max(1, round(s * rng.uniform(0.7, 0.9))) for s in (w, h))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((left, top, left + cw, top + ch))


def _pad(img: Image.Image, rng: np.random.Generator, background: Image.Image) -> Image.Image:
    """``img`` pasted at a random place on ``background`` (sized 1.2-1.6x the photo per side)."""
    w, h = img.size
    bw, bh = background.size
    left, top = int(rng.integers(0, bw - w + 1)), int(rng.integers(0, bh - h + 1))
    out = background.copy()
    out.paste(img, (left, top))
    return out


def _canvas_size(img: Image.Image, rng: np.random.Generator) -> tuple[int, int]:
    return tuple(round(s * rng.uniform(1.2, 1.6)) for s in img.size)  # type: ignore[return-value]


def pad_plain(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """On a plain background of a random light or dark colour (a marketplace's letterbox)."""
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    return _pad(img, rng, Image.new("RGB", _canvas_size(img, rng), colour))


def pad_textured(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """On a textured background: smooth random colour noise (a banner or a fabric backdrop)."""
    w, h = _canvas_size(img, rng)
    coarse = rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
    noise = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    return _pad(img, rng, noise)


def rescale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Down to 25-60 % of its size (a thumbnail copy)."""
    f = rng.uniform(0.25, 0.6)
    size = (max(8, round(img.width * f)), max(8, round(img.height * f)))
    return img.resize(size, Image.Resampling.BILINEAR)


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-compressed as JPEG at quality 15-40."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(15, 41)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def colour(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation changed by up to 35 %, a colour cast of up to 20."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.65, 1.35))
    cast = rng.integers(-20, 21, 3)
    pixels = np.asarray(img, np.int16) + cast.astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotated by 3-10 degrees either way, the corners filled white."""
    angle = rng.uniform(3, 10) * rng.choice([-1, 1])
    return img.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))


#: Every transform by name, in the order reports list them.
TRANSFORMS: dict[str, Transform] = {
    "mirror": mirror,
    "crop": crop,
    "pad_plain": pad_plain,
    "pad_textured": pad_textured,
    "rescale": rescale,
    "jpeg": jpeg,
    "colour": colour,
    "rotate": rotate,
}


def copy_of(img: Image.Image, transform: str, seed: int | Sequence[int]) -> Image.Image:
    """The copy of ``img`` made by ``transform`` with the parameters ``seed`` draws."""
    return TRANSFORMS[transform](img.convert("RGB"), np.random.default_rng(seed))


def random_view(img: Image.Image, rng: np.random.Generator, strength: float = 0.5) -> Image.Image:
    """One augmented view for self-supervised training: each transform applied with probability
    ``strength`` (mirror always a coin toss), in an order that mimics a copy's history (geometry,
    then colour, then compression)."""
    img = img.convert("RGB")
    if rng.random() < 0.5:
        img = mirror(img, rng)
    for name in ("crop", "rotate", "pad_plain", "pad_textured", "rescale", "colour", "jpeg"):
        if name.startswith("pad") and rng.random() < 0.5:
            continue  # one padding at most, on average
        if rng.random() < strength:
            img = TRANSFORMS[name](img, rng)
    return img
