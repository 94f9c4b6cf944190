"""A synthetic fashion catalog with ground truth, so the whole pipeline can run without real photos.

Every product is a garment (dresses of several silhouettes, tops, skirts, trousers) with one
colour and one pattern; it is photographed about four times on different studio or textured
backgrounds, at different positions, scales, slight rotations/shears and crops. The manifest
records, for every photo, the tight box of the rendered garment and the product's attributes,
which stand in for human annotators: :func:`load_ground_truth` puts the boxes and a set of
similarity triplets (same product > same silhouette and colour > anything else) into the store.

Only Pillow and NumPy are used; rendering is deterministic, so the same ``seed`` gives the same
JPEG bytes. A product's look and a photo's pixels depend on ``(seed, product, photo)`` only, not
on how many photos were asked for.

Layout written by :func:`make_demo_catalog`::

    OUT/images/p000-0.jpg ...   (id = "p<product>-<photo>", both counted from 0)
    OUT/manifest.json           (written last, atomically: a folder with one is complete)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.workspace import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # the store is imported lazily: generating photos must not need SQLite
    from tiefjax.store import Store

#: Bump when rendering changes, so an old demo folder is regenerated instead of reused.
RENDER_VERSION = 1
MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images"
JPEG_QUALITY = 90
#: Portrait 3:4 photo sizes (width, height); small so the demo runs on a laptop CPU.
SIZES = ((360, 480), (420, 560), (480, 640), (540, 720), (600, 800))
#: Photos per product are drawn from this range (inclusive); about four on average.
PHOTOS_PER_PRODUCT = (3, 5)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (190, 30, 45),
    "navy": (30, 45, 95),
    "black": (30, 30, 34),
    "ivory": (238, 230, 212),
    "emerald": (18, 120, 88),
    "mustard": (220, 165, 40),
    "blush": (236, 166, 172),
    "sky": (110, 165, 225),
    "burgundy": (115, 22, 48),
    "grey": (135, 135, 140),
    "olive": (105, 110, 48),
    "coral": (245, 112, 88),
    "lilac": (178, 148, 212),
    "camel": (196, 146, 92),
    "teal": (22, 122, 140),
}
SILHOUETTES = (
    "a-line dress",
    "sheath dress",
    "mermaid dress",
    "shift dress",
    "fit-and-flare dress",
    "t-shirt",
    "blouse",
    "a-line skirt",
    "pencil skirt",
    "trousers",
)
PATTERNS = ("solid", "stripes", "dots", "checks", "floral")
_DRESSES = SILHOUETTES[:5]
_ID_RE = re.compile(r"^p\d+-\d+\.jpg$")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DemoPhoto:
    """One photo: ``file`` is relative to the catalog folder; ``box`` is (left, top, right, bottom)
    in pixels, the tight box of the garment as rendered (clipped to the image)."""

    id: str
    file: str
    width: int
    height: int
    box: Box
    product: str
    silhouette: str
    colour: str
    pattern: str


@dataclass(frozen=True)
class DemoManifest:
    """Ground truth of a demo catalog: every photo, sorted by id."""

    seed: int
    photos: list[DemoPhoto]

    def by_id(self) -> dict[str, DemoPhoto]:
        return {p.id: p for p in self.photos}


# -- products -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    index: int
    silhouette: str
    colour: str
    rgb: tuple[float, float, float]  # 0..1
    pattern: str
    accent: tuple[float, float, float]
    third: tuple[float, float, float]
    pattern_period: float  # in garment heights
    pattern_angle: float  # radians
    shape: dict[str, float]

    @property
    def name(self) -> str:
        return f"p{self.index:03d}"


def _products(seed: int, count: int) -> list[_Product]:
    """The first ``count`` products of ``seed``: families of 1-3 products share silhouette and
    colour and differ in pattern, so "same silhouette and colour" groups exist in any catalog."""
    rng = np.random.default_rng([seed, 0xCA7A])
    products: list[_Product] = []
    silhouettes: list[str] = []
    colours: list[str] = []
    while len(products) < count:
        # dealt from shuffled decks, so any stretch of the catalog shows every kind of garment
        if not silhouettes:
            silhouettes = [str(x) for x in rng.permutation(SILHOUETTES)]
        if not colours:
            colours = [str(x) for x in rng.permutation(list(COLOURS))]
        silhouette, colour = silhouettes.pop(), colours.pop()
        size = int(rng.choice([1, 2, 2, 3]))
        patterns = rng.choice(PATTERNS, size=size, replace=False)
        for pattern in patterns:
            products.append(_make_product(len(products), silhouette, colour, str(pattern), rng))
    return products[:count]


def _make_product(
    index: int, silhouette: str, colour: str, pattern: str, rng: np.random.Generator
) -> _Product:
    base = np.array(COLOURS[colour], float) / 255.0
    base = np.clip(base * rng.uniform(0.93, 1.07) + rng.uniform(-0.02, 0.02, 3), 0, 1)
    lum = float(base @ [0.299, 0.587, 0.114])
    others = [c for c in COLOURS if c != colour]
    if rng.random() < 0.55:  # a plain light/dark contrast colour, as most printed fabrics have
        accent = np.array(COLOURS["ivory"] if lum < 0.55 else COLOURS["black"], float) / 255
    else:
        accent = np.array(COLOURS[str(rng.choice(others))], float) / 255
        if abs(float(accent @ [0.299, 0.587, 0.114]) - lum) < 0.15:
            accent = np.clip(
                accent * (0.45 if lum > 0.5 else 1.6) + (0 if lum > 0.5 else 0.2), 0, 1
            )
    third = np.array(COLOURS[str(rng.choice(["mustard", "ivory", "emerald", "coral"]))]) / 255
    period = {
        "solid": 0.05,
        "stripes": rng.uniform(0.035, 0.09),
        "dots": rng.uniform(0.04, 0.085),
        "checks": rng.uniform(0.04, 0.09),
        "floral": rng.uniform(0.08, 0.14),
    }[pattern]
    angle = float(rng.choice([0.0, math.pi / 2, math.pi / 4, 0.0])) if pattern == "stripes" else 0.0
    return _Product(
        index=index,
        silhouette=silhouette,
        colour=colour,
        rgb=tuple(base),
        pattern=pattern,
        accent=tuple(accent),
        third=tuple(third),
        pattern_period=float(period),
        pattern_angle=angle,
        shape=_shape_params(silhouette, rng),
    )


def _shape_params(silhouette: str, rng: np.random.Generator) -> dict[str, float]:
    u = rng.uniform
    p = {
        "neck_w": u(0.06, 0.095),
        "neck_d": u(0.03, 0.13),
        "shoulder_w": u(0.15, 0.175),
        "bust_w": u(0.14, 0.155),
        "waist_w": u(0.105, 0.125),
        "waist_y": u(0.31, 0.37),
        "hip_w": u(0.15, 0.17),
        "sleeve": float(rng.choice([0.0, 0.0, 0.07, 0.12])),
        "fold_p": u(0.07, 0.12),
        "fold_a": u(0.05, 0.1),
        "hem_w": 0.3,
        "wide": u(1.08, 1.22) if silhouette in _DRESSES else 1.0,
    }
    if silhouette == "a-line dress":
        p["hem_w"] = u(0.27, 0.34)
    elif silhouette == "sheath dress":
        p["hem_w"] = p["hip_w"] * u(0.86, 0.95)
        p["fold_a"] = 0.03
    elif silhouette == "mermaid dress":
        p["waist_w"] = p["bust_w"] * u(0.8, 0.86)
        p["hip_w"] = p["bust_w"] * u(0.97, 1.03)
        p["knee_w"] = p["bust_w"] * u(0.68, 0.75)
        p["knee_y"] = u(0.66, 0.74)
        p["hem_w"] = u(0.27, 0.34)
        p["sleeve"] = 0.0
    elif silhouette == "shift dress":
        p["waist_w"] = p["bust_w"] * u(0.97, 1.02)
        p["hem_w"] = u(0.18, 0.22)
        p["fold_a"] = 0.03
    elif silhouette == "fit-and-flare dress":
        p["waist_w"] = u(0.095, 0.11)
        p["hem_w"] = u(0.36, 0.42)
    elif silhouette in ("t-shirt", "blouse"):
        tee = silhouette == "t-shirt"
        p["body_w"] = u(0.3, 0.34) if tee else u(0.25, 0.29)
        p["shoulder_w"] = p["body_w"] * u(0.95, 1.02)
        p["sleeve_len"] = u(0.24, 0.32) if tee else u(0.72, 0.82)
        p["fold_a"] = 0.03
        p["neck_d"] = u(0.04, 0.08) if silhouette == "t-shirt" else u(0.1, 0.18)
    elif silhouette == "a-line skirt":
        p["top_w"] = u(0.22, 0.26)
        p["hem_w"] = u(0.42, 0.52)
    elif silhouette == "pencil skirt":
        p["top_w"] = u(0.22, 0.26)
        p["hip_w"] = p["top_w"] * u(1.1, 1.2)
        p["hem_w"] = p["top_w"] * u(0.98, 1.08)
        p["fold_a"] = 0.025
    elif silhouette == "trousers":
        p["top_w"] = u(0.16, 0.19)
        p["hip_w"] = p["top_w"] * u(1.05, 1.15)
        p["hem_out"] = u(0.16, 0.24)
        p["hem_in"] = u(0.035, 0.06)
        p["crotch_y"] = u(0.28, 0.34)
        p["fold_a"] = 0.03
    return p


# -- garment outlines (local units: garment height 1, centre x = 0, top y = 0) -------------------


def _bezier(p0, p1, p2, p3, n: int = 14) -> list[tuple[float, float]]:
    t = np.linspace(0, 1, n + 1)[1:, None]
    pts = (
        (1 - t) ** 3 * np.array(p0)
        + 3 * (1 - t) ** 2 * t * np.array(p1)
        + 3 * (1 - t) * t**2 * np.array(p2)
        + t**3 * np.array(p3)
    )
    return [(float(x), float(y)) for x, y in pts]


def _right_half(silhouette: str, s: dict[str, float]) -> list[tuple[float, float]]:
    """Right half of the outline from the top centre, clockwise, down to the bottom centre."""
    if silhouette in _DRESSES:
        return _dress_half(silhouette, s)
    if silhouette in ("t-shirt", "blouse"):
        return _top_half(silhouette, s)
    if silhouette == "trousers":
        tw, hw = s["top_w"], s["hip_w"]
        pts = [(0.0, 0.0), (tw, 0.0)]
        pts += _bezier((tw, 0.0), (hw, 0.08), (hw, 0.2), (hw * 0.99, 0.3))
        pts += _bezier((hw * 0.99, 0.3), (hw, 0.55), (s["hem_out"], 0.8), (s["hem_out"], 1.0))
        pts += [(s["hem_in"], 1.0)]
        pts += _bezier(
            (s["hem_in"], 1.0), (s["hem_in"] * 0.8, 0.7), (0.02, 0.4), (0.0, s["crotch_y"])
        )
        return pts
    tw, hem = s["top_w"], s["hem_w"]
    pts = [(0.0, 0.0), (tw, 0.0)]
    if silhouette == "a-line skirt":
        pts += _bezier((tw, 0.0), (tw + 0.05, 0.25), (hem - 0.03, 0.7), (hem, 0.97))
    else:  # pencil
        hw = s["hip_w"]
        pts += _bezier((tw, 0.0), (hw, 0.1), (hw, 0.3), (hw * 0.98, 0.4))
        pts += _bezier((hw * 0.98, 0.4), (hw * 0.95, 0.7), (hem, 0.85), (hem, 0.98))
    pts += _bezier(pts[-1], (pts[-1][0] * 0.7, 1.0), (0.2 * pts[-1][0], 1.0), (0.0, 1.0))
    return pts


def _dress_half(silhouette: str, s: dict[str, float]) -> list[tuple[float, float]]:
    nw, nd, sw, bw = s["neck_w"], s["neck_d"], s["shoulder_w"], s["bust_w"]
    ww, wy, hw, hem = s["waist_w"], s["waist_y"], s["hip_w"], s["hem_w"]
    pts = [(0.0, nd)]
    pts += _bezier((0.0, nd), (nw * 0.6, nd), (nw, nd * 0.4), (nw, 0.0), 10)
    pts.append((sw, 0.02))
    sl = s["sleeve"]
    if sl > 0:
        pts += [(sw + sl * 0.5, 0.02 + sl), (sw + sl * 0.5 - 0.045, 0.045 + sl), (bw, 0.16)]
    else:
        pts += _bezier((sw, 0.02), (sw - 0.035, 0.07), (bw - 0.02, 0.13), (bw, 0.16), 10)
    pts.append((bw, 0.2))
    if silhouette == "shift dress":
        pts += _bezier((bw, 0.2), (bw, 0.4), (hem * 0.95, 0.8), (hem, 0.97))
    else:
        pts += _bezier((bw, 0.2), (bw, 0.26), (ww, wy - 0.06), (ww, wy), 10)
        if silhouette == "a-line dress":
            pts += _bezier((ww, wy), (ww + 0.04, wy + 0.1), (hem - 0.04, 0.7), (hem, 0.97))
        elif silhouette == "fit-and-flare dress":
            pts += _bezier((ww, wy), (ww + 0.13, wy + 0.04), (hem, 0.6), (hem, 0.96))
        else:  # sheath, mermaid: fitted over the hips first
            pts += _bezier((ww, wy), (hw, wy + 0.05), (hw, wy + 0.12), (hw * 0.99, wy + 0.17), 10)
            if silhouette == "sheath dress":
                pts += _bezier(pts[-1], (hw * 0.97, 0.7), (hem, 0.85), (hem, 0.98))
            else:
                kw, ky = s["knee_w"], s["knee_y"]
                pts += _bezier(pts[-1], (hw * 0.99, wy + 0.27), (kw, ky - 0.12), (kw, ky))
                pts += _bezier((kw, ky), (kw, ky + 0.12), (hem * 0.7, 0.9), (hem, 0.98))
    pts += _bezier(pts[-1], (pts[-1][0] * 0.7, 1.0), (0.2 * pts[-1][0], 1.0), (0.0, 1.0))
    return pts


def _top_half(silhouette: str, s: dict[str, float]) -> list[tuple[float, float]]:
    nw, nd, sw, bw, sl = s["neck_w"], s["neck_d"], s["shoulder_w"], s["body_w"], s["sleeve_len"]
    pts = [(0.0, nd)]
    pts += _bezier((0.0, nd), (nw * 0.6, nd), (nw, nd * 0.4), (nw, 0.0), 10)
    pts.append((sw, 0.05))
    # the sleeve hangs down and out from the shoulder, its cuff square to it
    tee = silhouette == "t-shirt"
    ang = math.radians(38 if tee else 68)
    cuff = 0.15 if tee else 0.085
    ex, ey = sw + sl * math.cos(ang), 0.05 + sl * math.sin(ang)
    ix, iy = ex - cuff * math.sin(ang), ey + cuff * math.cos(ang)
    pts += [(ex, ey), (ix, iy)]
    pts.append((bw, 0.05 + cuff / math.cos(ang) * 0.9 if tee else 0.26))
    if silhouette == "blouse":
        pts += _bezier(pts[-1], (bw * 0.95, 0.5), (bw * 0.95, 0.7), (bw, 0.93))
        pts += _bezier((bw, 0.93), (bw * 0.7, 1.02), (bw * 0.3, 1.0), (0.0, 1.0))
    else:
        pts += [(bw * 1.01, 0.98)]
        pts += _bezier((bw * 1.01, 0.98), (bw * 0.7, 1.0), (bw * 0.3, 1.0), (0.0, 1.0))
    return pts


def _outline(product: _Product) -> np.ndarray:
    right = _right_half(product.silhouette, product.shape)
    wide = product.shape.get("wide", 1.0)
    right = [(x * wide, y) for x, y in right]
    left = [(-x, y) for x, y in reversed(right)]
    return np.array(right + left, float)


# -- backgrounds ----------------------------------------------------------------------------------

BACKGROUNDS = ("studio", "gradient", "sweep", "noise", "wood", "fabric")


def _resize_f(small: np.ndarray, w: int, h: int) -> np.ndarray:
    img = Image.fromarray(small.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)


def _noise(rng: np.random.Generator, w: int, h: int, cell: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with features about ``cell`` pixels wide."""
    small = rng.random((h // cell + 2, w // cell + 2))
    return _resize_f(small, w + 2 * cell, h + 2 * cell)[cell : cell + h, cell : cell + w]


def _tone(rng: np.random.Generator, light: bool) -> np.ndarray:
    if light:  # off-white, warm/cool greys, pastel studio paper
        base = rng.uniform(0.8, 0.97)
        tint = rng.uniform(-0.04, 0.04, 3)
        return np.clip(base + tint, 0, 1)
    base = rng.uniform(0.25, 0.6)
    return np.clip(base + rng.uniform(-0.08, 0.08, 3), 0, 1)


def _background(kind: str, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    grain = (rng.standard_normal((h, w, 1)).astype(np.float32)) * 0.008
    if kind == "studio":
        c = _tone(rng, light=rng.random() < 0.85)
        img = c * (1.0 - 0.05 * yy)
    elif kind == "gradient":
        a, b = _tone(rng, True), _tone(rng, rng.random() < 0.6)
        t: np.ndarray
        if rng.random() < 0.5:
            t = yy
        else:  # a spotlight on the paper, darker towards the corners
            cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.55)
            t = np.sqrt((xx - cx) ** 2 + ((yy - cy) * 1.2) ** 2) * 1.3
        img = a + (b - a) * np.clip(t, 0, 1)
    elif kind == "sweep":  # wall meets floor with a soft curve
        wall, floor = _tone(rng, True), _tone(rng, rng.random() < 0.7) * 0.9
        horizon, soft = rng.uniform(0.6, 0.85), rng.uniform(0.04, 0.12)
        t = np.clip((yy - horizon) / soft + 0.5, 0, 1)
        img = wall + (floor - wall) * (t * t * (3 - 2 * t))
    elif kind == "noise":  # concrete / plaster
        a = _tone(rng, rng.random() < 0.6)
        b = a * rng.uniform(0.75, 0.9)
        n = 0.6 * _noise(rng, w, h, int(rng.integers(40, 90))) + 0.4 * _noise(rng, w, h, 9)
        img = a + (b - a) * n[..., None]
        grain = grain * 3
    elif kind == "wood":
        a = np.array(
            [(0.62, 0.45, 0.3), (0.75, 0.6, 0.43), (0.45, 0.3, 0.2), (0.85, 0.78, 0.66)][
                int(rng.integers(4))
            ]
        )
        vertical = rng.random() < 0.5
        length, across = (h, w) if vertical else (w, h)
        plank = int(across / rng.uniform(3, 6))
        warp = _noise(rng, w, h, 60) * rng.uniform(4, 9)
        coord_across = (xx if vertical else yy)[..., 0] * across
        coord_along = (yy if vertical else xx)[..., 0] * length
        board = np.floor(coord_across / plank)
        freq = rng.uniform(0.15, 0.35)
        rings = 0.5 + 0.5 * np.sin(coord_across * freq + warp + board * 7.3 + coord_along * 0.004)
        shade = 1 + 0.08 * np.sin(board * 12.9898) - 0.1 * rings**4
        seam = (coord_across % plank) < 1.5
        shade = np.where(seam, 0.75, shade)
        img = a * shade[..., None]
    else:  # fabric: linen-like weave with slubs
        a = _tone(rng, rng.random() < 0.7)
        period = rng.uniform(2.5, 4.0)
        yi = yy[..., 0] * h
        xi = xx[..., 0] * w
        weave = np.sin(xi * 2 * np.pi / period) * np.sin(yi * 2 * np.pi / period)
        slubs = _resize_f(rng.random((h // 3, 3)), w, h) - 0.5
        img = (
            a * (1 + 0.035 * weave + 0.06 * slubs + 0.05 * (_noise(rng, w, h, 50) - 0.5))[..., None]
        )
    img = np.broadcast_to(img, (h, w, 3))  # plain and vertical backgrounds come as one column
    return np.clip(img + grain, 0, 1).astype(np.float32)


# -- patterns ---------------------------------------------------------------------------------


def _coverage(dist_inside: np.ndarray, px: float) -> np.ndarray:
    """Antialiased coverage from a signed distance (positive inside) in local units."""
    return np.clip(0.5 + dist_inside / px, 0.0, 1.0)


def _hash(i: np.ndarray, j: np.ndarray, k: float) -> np.ndarray:
    return np.mod(np.sin(i * 12.9898 + j * 78.233 + k) * 43758.5453, 1.0)


def _pattern(product: _Product, u: np.ndarray, v: np.ndarray, px: float) -> np.ndarray:
    base = np.array(product.rgb, np.float32)
    acc = np.array(product.accent, np.float32)
    p = product.pattern_period
    ca, sa = math.cos(product.pattern_angle), math.sin(product.pattern_angle)
    a, b = u * ca + v * sa, -u * sa + v * ca
    if product.pattern == "solid":
        t = np.zeros_like(u)
    elif product.pattern == "stripes":
        d = np.abs(np.mod(a / p, 1.0) - 0.5) * p  # 0 at the stripe's centre
        t = _coverage(0.22 * p - d, px)
    elif product.pattern == "dots":
        row = np.floor(b / p)
        aa = a / p + 0.5 * np.mod(row, 2)
        d = np.hypot((aa - np.floor(aa) - 0.5) * p, (b / p - row - 0.5) * p)
        t = _coverage(0.24 * p - d, px)
    elif product.pattern == "checks":  # gingham: two stripe families at half strength
        dh = np.abs(np.mod(a / p, 1.0) - 0.5) * p
        dv = np.abs(np.mod(b / p, 1.0) - 0.5) * p
        t = 0.5 * (_coverage(0.25 * p - dh, px) + _coverage(0.25 * p - dv, px))
    else:  # floral: five-petal flowers on a jittered half-drop lattice
        row = np.floor(b / p)
        aa = a / p + 0.5 * np.mod(row, 2)
        col = np.floor(aa)
        jx = (_hash(col, row, 1.0) - 0.5) * 0.3
        jy = (_hash(col, row, 2.0) - 0.5) * 0.3
        dx = (aa - col - 0.5 - jx) * p
        dy = (b / p - row - 0.5 - jy) * p
        d = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx) + _hash(col, row, 3.0) * 6.283
        radius = p * 0.34 * (0.5 + 0.5 * np.abs(np.cos(2.5 * theta)))
        t = _coverage(radius - d, px)
        centre = _coverage(0.08 * p - d, px)[..., None]
        third = np.array(product.third, np.float32)
        col_rgb = base + (acc - base) * t[..., None]
        return col_rgb + (third - col_rgb) * centre
    return base + (acc - base) * t[..., None]


# -- photos -----------------------------------------------------------------------------------


@dataclass
class Rendered:
    """A rendered photo before JPEG: the composite, the same background without the garment,
    the garment's coverage (0..1) and its tight box. Tests check the box against the pixels."""

    image: np.ndarray  # uint8 (H, W, 3)
    background: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # float32 (H, W)
    box: Box


def _photo_rng(seed: int, product: int, photo: int) -> np.random.Generator:
    return np.random.default_rng([seed, product, photo, 0xF070])


def render_photo(seed: int, product: int, photo: int) -> Rendered:
    """Render photo ``photo`` of product ``product`` of the catalog with ``seed``."""
    return _render(_products(seed, product + 1)[product], _photo_rng(seed, product, photo), photo)


def _render(product: _Product, rng: np.random.Generator, photo: int) -> Rendered:
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg = _background(kind, rng, w, h)
    bg = _ensure_contrast(bg, np.array(product.rgb, np.float32))

    # pose: sway of the hem, mirror, rotation, shear, scale, position, sometimes a close crop
    local = _outline(product)
    sway = rng.uniform(-0.05, 0.05)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    rot = math.radians(rng.uniform(-5, 5))
    shear = rng.uniform(-0.07, 0.07)
    lin = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) @ np.array(
        [[1.0, shear], [0.0, 1.0]]
    )
    posed = np.stack([flip * (local[:, 0] + sway * local[:, 1] ** 2), local[:, 1]], 1) @ lin.T
    span = posed.max(0) - posed.min(0)
    crop = photo > 0 and rng.random() < 0.2
    if crop:  # a close-up that cuts the garment at the frame
        scale = rng.uniform(1.1, 1.4) * min(h / span[1], w / span[0])
    else:
        fill = rng.uniform(0.6, 0.92)
        scale = min(fill * h / span[1], 0.92 * w / span[0])
    size = span * scale
    lo = posed.min(0) * scale
    slack = np.array([w, h]) - size
    frac = np.clip(rng.normal(0.5, 0.18, 2), 0.05, 0.95)
    offset = slack * frac - lo
    pts = posed * scale + offset

    mask = _polygon_mask(pts, w, h)
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:  # cannot happen with the placement above; kept as a clear failure
        raise RuntimeError("garment rendered outside the photo")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1

    # texture in garment coordinates, so patterns follow the pose
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    inv = np.linalg.inv(lin * scale)
    qx, qy = gx - offset[0], gy - offset[1]
    pu = inv[0, 0] * qx + inv[0, 1] * qy
    v = inv[1, 0] * qx + inv[1, 1] * qy
    u = flip * pu - sway * v**2
    px = 1.0 / scale
    colour = _pattern(product, u, v, px)
    shade = _shading(product, u, v, px, mask[y0:y1, x0:x1], scale)
    fabric = 1 + 0.012 * rng.standard_normal(u.shape).astype(np.float32)
    garment = np.clip(colour * (shade * fabric)[..., None], 0, 1)

    out = bg.copy()
    m = mask[y0:y1, x0:x1, None]
    out[y0:y1, x0:x1] = bg[y0:y1, x0:x1] * (1 - m) + garment * m
    box = (float(x0), float(y0), float(x1), float(y1))
    return Rendered(_to_uint8(out), _to_uint8(bg), mask, box)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _ensure_contrast(bg: np.ndarray, garment: np.ndarray) -> np.ndarray:
    """Keep the garment visible: darken or lighten a background too close to its colour."""
    mean = bg.reshape(-1, 3).mean(0)
    if float(np.linalg.norm(mean - garment)) >= 0.22:
        return bg
    lum = float(garment @ np.array([0.299, 0.587, 0.114], np.float32))
    return (bg * 0.55 if lum > 0.5 else 0.45 + bg * 0.55).astype(np.float32)


def _polygon_mask(pts: np.ndarray, w: int, h: int, ss: int = 4) -> np.ndarray:
    """Coverage of the polygon per pixel, by drawing it ``ss`` times larger and averaging."""
    big = Image.new("L", (w * ss, h * ss), 0)
    ImageDraw.Draw(big).polygon([(float(x) * ss, float(y) * ss) for x, y in pts], fill=255)
    return np.asarray(big.reduce(ss), np.float32) / 255.0


def _shading(
    product: _Product, u: np.ndarray, v: np.ndarray, px: float, mask: np.ndarray, scale: float
) -> np.ndarray:
    s = product.shape
    sil = product.silhouette
    # rounded edges: darker where the blurred silhouette falls off
    radius = float(max(2.0, 0.02 * scale))
    pad = int(radius * 3)
    padded = np.pad((mask * 255).astype(np.uint8), pad)
    blurred = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius))
    edge = np.asarray(blurred, np.float32)[pad:-pad, pad:-pad] / 255.0
    shade = 0.68 + 0.32 * np.clip((edge - 0.5) * 2.2, 0, 1)
    # light from the upper left
    shade *= 1.0 - 0.25 * u - 0.08 * (v - 0.5)
    # folds in the skirt part, growing towards the hem
    start = 0.0 if sil in ("a-line skirt", "pencil skirt", "trousers") else s["waist_y"]
    if sil in ("t-shirt", "blouse"):
        start = 0.4
    ramp = np.clip((v - start) / (1.0 - start), 0, 1)
    shade *= 1 + s["fold_a"] * ramp * np.sin(2 * np.pi * u / s["fold_p"] + 1.3)
    # seams and details
    line = max(px * 1.2, 0.003)
    if sil in _DRESSES and sil != "shift dress":
        shade *= 1 - 0.22 * _coverage(line - np.abs(v - s["waist_y"]), px)
    if sil in ("a-line skirt", "pencil skirt", "trousers"):
        shade *= 1 - 0.25 * _coverage(line - np.abs(v - 0.07), px)
    if sil == "trousers":  # pressed creases down the middle of each leg
        leg = 0.5 * (s["hem_out"] + s["hem_in"]) * np.clip(v / 1.0, 0.6, 1.0)
        shade *= 1 - 0.12 * _coverage(line - np.abs(np.abs(u) - leg), px) * (v > 0.35)
    if sil == "blouse":  # placket and buttons
        shade *= 1 - 0.15 * _coverage(line - np.abs(np.abs(u) - 0.018), px) * (v > s["neck_d"])
        by = np.mod(v - s["neck_d"] - 0.04, 0.11)
        d = np.hypot(u, np.minimum(by, 0.11 - by))
        shade *= 1 - 0.35 * _coverage(0.011 - d, px) * (v > s["neck_d"] + 0.02)
    return shade.astype(np.float32)


def encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# -- the catalog folder ---------------------------------------------------------------------------


def _photo_counts(seed: int, n: int) -> list[int]:
    """Photos per product, 3-5 each, adding up to ``n`` (no product left with a single photo)."""
    rng = np.random.default_rng([seed, 0xC0C0])
    counts: list[int] = []
    while sum(counts) < n:
        c = int(rng.integers(PHOTOS_PER_PRODUCT[0], PHOTOS_PER_PRODUCT[1] + 1))
        counts.append(min(c, n - sum(counts)))
    if len(counts) > 1 and counts[-1] == 1:
        last = counts.pop()  # pop first: `counts[-2] += counts.pop()` adds to the wrong entry
        counts[-1] += last
    return counts


def make_demo_catalog(out: Path, n: int, seed: int = 0) -> DemoManifest:
    """Write ``n`` photos (about four per product) and their manifest into ``out``.

    Re-running with the same ``n`` and ``seed`` on a complete catalog reuses it (nothing is
    written). With other arguments the previous demo photos are deleted and the catalog is
    written again, so no stale photos remain. A folder that holds anything else (files that a
    demo catalog does not write) is refused, so no user data is ever deleted.
    """
    out = Path(out)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"n must be a positive number of photos, got {n!r}")
    manifest_path = out / MANIFEST_NAME
    if manifest_path.exists():
        try:
            old = _read_manifest_json(manifest_path)
        except InvalidInput:
            old = None
        if (
            old is not None
            and old.get("seed") == seed
            and old.get("n") == n
            and old.get("render_version") == RENDER_VERSION
            and all((out / p["file"]).exists() for p in old["photos"])
        ):
            return load_manifest(out)
    _clear_previous(out)

    counts = _photo_counts(seed, n)
    products = _products(seed, len(counts))
    width = max(3, len(str(len(counts) - 1)))
    jobs = [(product, k) for product, count in zip(products, counts, strict=True)
            for k in range(count)]  # fmt: skip

    def write(job: tuple[_Product, int]) -> DemoPhoto:
        product, k = job
        rendered = _render(product, _photo_rng(seed, product.index, k), k)
        name = f"p{product.index:0{width}d}"
        rel = f"{IMAGES_DIR}/{name}-{k}.jpg"
        atomic_write_bytes(out / rel, encode_jpeg(rendered.image))
        h, w = rendered.mask.shape
        return DemoPhoto(
            id=f"{name}-{k}",
            file=rel,
            width=w,
            height=h,
            box=rendered.box,
            product=name,
            silhouette=product.silhouette,
            colour=product.colour,
            pattern=product.pattern,
        )

    # NumPy and Pillow release the GIL for the heavy parts; results do not depend on threads
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        photos = list(pool.map(write, jobs))
    photos.sort(key=lambda p: p.id)
    doc = {
        "format": "tiefjax-demo-catalog",
        "render_version": RENDER_VERSION,
        "seed": seed,
        "n": n,
        "photos": [dataclasses.asdict(p) for p in photos],
    }
    atomic_write_text(manifest_path, json.dumps(doc, indent=1) + "\n")
    return DemoManifest(seed=seed, photos=photos)


def _clear_previous(out: Path) -> None:
    """Delete what an earlier demo catalog wrote; refuse when the folder holds anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InvalidInput(f"{out} is a file; give a folder (new or an earlier demo catalog)")
    images = out / IMAGES_DIR
    foreign = [p.name for p in out.iterdir() if p.name not in (MANIFEST_NAME, IMAGES_DIR)]
    foreign = [f for f in foreign if not f.startswith(f".{MANIFEST_NAME}.")]  # stale temp files
    if images.is_dir():
        foreign += [
            f"{IMAGES_DIR}/{p.name}"
            for p in images.iterdir()
            if not (_ID_RE.match(p.name) or p.name.startswith("."))
        ]
    elif images.exists():
        foreign.append(IMAGES_DIR)
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InvalidInput(
            f"{out} is not empty and not a demo catalog (it holds {shown}); "
            "choose a new or empty folder for the demo catalog"
        )
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # first, so a half rewrite is never "complete"
    for p in out.iterdir():
        if p.name.startswith(f".{MANIFEST_NAME}."):
            p.unlink()
    if images.is_dir():
        for p in images.iterdir():
            p.unlink()


def _read_manifest_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInput(f"{path} is not a readable demo manifest ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != "tiefjax-demo-catalog":
        raise InvalidInput(f"{path} is not a tiefjax demo catalog manifest")
    return doc


def load_manifest(out: Path) -> DemoManifest:
    """Read the manifest of a demo catalog folder written by :func:`make_demo_catalog`."""
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        raise NotFound(
            f"{path} does not exist; create the demo catalog with: tiefjax demo-catalog {out}"
        )
    doc = _read_manifest_json(path)
    try:
        photos = [
            DemoPhoto(**{**p, "box": tuple(float(x) for x in p["box"])}) for p in doc["photos"]
        ]
        return DemoManifest(seed=int(doc["seed"]), photos=photos)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInput(f"{path} is damaged ({err}); generate the demo catalog again") from err


# -- ground truth ---------------------------------------------------------------------------------


def similarity_rank(a: DemoPhoto, b: DemoPhoto) -> int:
    """How alike two photos are by ground truth: 2 same product, 1 same silhouette and colour,
    0 otherwise."""
    if a.product == b.product:
        return 2
    return 1 if (a.silhouette, a.colour) == (b.silhouette, b.colour) else 0


def ground_truth_triplets(
    manifest: DemoManifest, seed: int = 0, per_image: int = 2
) -> list[tuple[str, str, str]]:
    """Up to ``per_image`` (reference, positive, negative) triplets per photo, where the positive
    is more alike than the negative by :func:`similarity_rank`.

    Two kinds alternate: the positive is another photo of the same product (the negative half of
    the time a same-silhouette-and-colour product, a hard negative, else any other product); or
    the positive is another product of the same silhouette and colour, the negative anything
    else. A reference lacking one kind gets the other; no triplet is repeated.
    """
    photos = sorted(manifest.photos, key=lambda p: p.id)
    rng = np.random.default_rng([seed, 0x7217])
    by_product: dict[str, list[DemoPhoto]] = {}
    by_family: dict[tuple[str, str], list[DemoPhoto]] = {}
    for p in photos:
        by_product.setdefault(p.product, []).append(p)
        by_family.setdefault((p.silhouette, p.colour), []).append(p)

    def pick(items: Sequence[DemoPhoto]) -> DemoPhoto:
        return items[int(rng.integers(len(items)))]

    def other(ref: DemoPhoto) -> DemoPhoto | None:
        family = (ref.silhouette, ref.colour)
        if len(by_family[family]) == len(photos):
            return None
        while True:  # terminates: some photo lies outside the family
            cand = pick(photos)
            if (cand.silhouette, cand.colour) != family:
                return cand

    triplets: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for ref in photos:
        same_product = [p for p in by_product[ref.product] if p.id != ref.id]
        same_family = [
            p for p in by_family[(ref.silhouette, ref.colour)] if p.product != ref.product
        ]
        made = 0
        for attempt in range(per_image * 4):
            if made >= per_image:
                break
            kinds = ["product", "family"] if (made + attempt) % 2 == 0 else ["family", "product"]
            triplet = None
            for kind in kinds:
                if kind == "product" and same_product:
                    pos = pick(same_product)
                    neg = pick(same_family) if same_family and rng.random() < 0.5 else other(ref)
                elif kind == "family" and same_family:
                    pos, neg = pick(same_family), other(ref)
                else:
                    continue
                if neg is not None:
                    triplet = (ref.id, pos.id, neg.id)
                    break
            if triplet is None:
                break  # nothing to compare this photo with
            if triplet not in seen:
                seen.add(triplet)
                triplets.append(triplet)
                made += 1
    return triplets


def load_ground_truth(
    store: Store, manifest: DemoManifest, seed: int = 0, per_image: int = 2
) -> tuple[int, int]:
    """Put the manifest's boxes and ground-truth triplets into ``store``, standing in for
    annotators. Photos not registered in the store are skipped. Returns (boxes, triplets)."""
    from tiefjax.store import Box as StoreBox  # lazily: the demo photos do not need SQLite

    registered = set(store.image_ids())
    present = [p for p in manifest.photos if p.id in registered]
    if not present:
        raise NotFound(
            f"none of the {len(manifest.photos)} demo photos is registered in this workspace; "
            "register them first with: tiefjax init WORKSPACE --images DEMO_FOLDER/images"
        )
    triplets = [
        t for t in ground_truth_triplets(manifest, seed, per_image) if registered.issuperset(t)
    ]
    with store.transaction():  # one commit for the lot: fast, and all or nothing
        for p in present:
            store.put_box(p.id, StoreBox(*p.box), expected_version=None, by="demo")
        store.add_triplets(triplets, by="demo")
    return len(present), len(triplets)


def contact_sheet(
    out: Path, dest: Path, count: int = 24, thumb: int = 160, boxes: bool = True
) -> Path:
    """A PNG grid of ``count`` photos, two per product, with their boxes: for eyeballing."""
    manifest = load_manifest(out)
    # two photos of each product first: shows both the variety and what stays the same
    ranked = sorted(manifest.photos, key=lambda p: (int(p.id.split("-")[1]) >= 2, p.id))
    photos = ranked[:count]
    cols = 6
    rows = max(1, math.ceil(len(photos) / cols))
    cell_w, cell_h = thumb, thumb * 4 // 3 + 14
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, p in enumerate(photos):
        img = Image.open(Path(out) / p.file).convert("RGB")
        s = min(thumb / img.width, (thumb * 4 // 3) / img.height)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS)
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        sheet.paste(img, (x, y))
        if boxes:
            left, top, right, bottom = (c * s for c in p.box)
            draw.rectangle((x + left, y + top, x + right - 1, y + bottom - 1), outline=(0, 200, 0))
        draw.text((x + 2, y + cell_h - 13), f"{p.id} {p.pattern}", fill=(0, 0, 0))
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return Path(dest)
