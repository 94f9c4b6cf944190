"""Crop sampling, foreground/background labels and box-regression targets (no files, no tfds).

For every image with a product box and every scale s, the image is resized so its shorter side
is s and 224x224 windows are drawn at random among the positions of each class (seeded per image
id, so the same catalog gives the same crops everywhere; see :func:`sample_crops`). Every crop
belongs to one or both training sets (:attr:`CropSpec.sets`): the **classification** set takes
both classes at the ``short_sides`` scales, the **regression** set the foreground crops at the
``regression_short_sides`` scales (by default the same ones), so a scale listed for one set only
gives the other none of its crops.

A window's **inside fraction** is the share of its area that lies inside the box, with
exclusive pixel edges throughout (a window ``[left, left + 224)`` has area 224², the same
convention as the intersection; the original mixed 225² and 224²).

* **foreground** (label 1) when inside >= ``foreground_min_inside`` (50 %);
* **background** (label 0) when inside <= ``background_max_inside`` (50 %), i.e. at least half of
  the crop is background (the original demanded no overlap at all);
* a window at **exactly 50 %** satisfies both definitions: **foreground wins**. With the defaults
  every window therefore gets a label; other thresholds can leave a band of unlabelled windows,
  which are not used.

Regression targets are the box corners relative to the crop origin, in crop (= scaled-image)
pixels: ``(dl, dt, dr, db) = (box.left - left, box.top - top, box.right - left,
box.bottom - top)``; they may be negative or larger than 224 when the box sticks out of the crop.
A horizontally flipped crop keeps its label and gets ``(224 - dr, dt, 224 - dl, db)``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
from PIL import Image

from tiefjax.errors import InvalidInput
from tiefjax.images import crop_resize

#: Crop side in pixels; equals ``tiefjax.nets.alexnet.WINDOW`` (not imported: that pulls in JAX).
WINDOW = 224
FOREGROUND, BACKGROUND = 1, 0
#: What :func:`labels` gives a window in the band between the two thresholds.
UNLABELLED = -1
#: The two crop sets a :class:`CropSpec` can belong to (also the prepared datasets' names).
CLASSIFICATION, REGRESSION = "classification", "regression"

Box = tuple[float, float, float, float]  # left, top, right, bottom (right/bottom exclusive)
Deltas = tuple[float, float, float, float]  # dl, dt, dr, db in crop pixels


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``tiefjax prepare`` (section ``[prepare]`` of ``tiefjax.toml``)."""

    test_fraction: float = field(
        default=0.1, metadata=_help("share of images (with all their crops) in the test split")
    )
    seed: int = field(default=0, metadata=_help("seed of the split hash and the crop sampling"))
    short_sides: tuple[int, ...] = field(
        default=(320, 448),
        metadata=_help(
            "scales: the image is resized so its shorter side is each of these (pixels); a "
            "scale whose resized image cannot hold a 224x224 window is skipped"
        ),
    )
    crops_per_scale: int = field(
        default=5, metadata=_help("crops kept per image, scale and class (foreground/background)")
    )
    regression_short_sides: tuple[int, ...] = field(
        default=(),
        metadata=_help(
            "scales of the regression set's foreground crops ([] = short_sides); short_sides "
            "then only serve the classification set"
        ),
    )
    regression_crops_per_scale: int = field(
        default=0,
        metadata=_help("regression crops kept per image and scale (0 = crops_per_scale)"),
    )
    flips: bool = field(
        default=True, metadata=_help("also store a horizontally flipped copy of every crop")
    )
    foreground_min_inside: float = field(
        default=0.5,
        metadata=_help("a crop is foreground when at least this share of it lies inside the box"),
    )
    background_max_inside: float = field(
        default=0.5,
        metadata=_help(
            "a crop is background when at most this share of it lies inside the box (foreground "
            "wins when both hold)"
        ),
    )
    image_format: str = field(
        default="jpeg", metadata=_help("how crops are stored: jpeg (small, lossy) or png")
    )
    jpeg_quality: int = field(default=95, metadata=_help("JPEG quality of stored crops (1-100)"))

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.test_fraction <= 1.0:
            problems.append(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if not self.short_sides or not _positive_ints(self.short_sides):
            problems.append(f"short_sides must be positive integers, got {self.short_sides!r}")
        if not _positive_ints(self.regression_short_sides):
            problems.append(
                "regression_short_sides must be positive integers (or [] for short_sides), "
                f"got {self.regression_short_sides!r}"
            )
        if self.crops_per_scale < 1:
            problems.append(f"crops_per_scale must be >= 1, got {self.crops_per_scale}")
        if self.regression_crops_per_scale < 0:
            problems.append(
                "regression_crops_per_scale must be >= 1 (or 0 for crops_per_scale), got "
                f"{self.regression_crops_per_scale}"
            )
        for name in ("foreground_min_inside", "background_max_inside"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.foreground_min_inside == 0.0:
            problems.append("foreground_min_inside must be above 0")
        if self.image_format not in ("jpeg", "png"):
            problems.append(f"image_format must be jpeg or png, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if problems:
            raise InvalidInput("invalid [prepare] settings: " + "; ".join(problems))

    @classmethod
    def tiny(cls) -> PrepareConfig:
        """Small and lossless, for tests: few crops, two scales, PNG."""
        return cls(
            test_fraction=0.3,
            short_sides=(224, 256),
            crops_per_scale=2,
            image_format="png",
        )

    @property
    def regression_sides(self) -> tuple[int, ...]:
        """The regression set's scales (``regression_short_sides``, else ``short_sides``)."""
        return self.regression_short_sides or self.short_sides

    @property
    def regression_crops(self) -> int:
        """Regression crops per image and scale (``regression_crops_per_scale``, else
        ``crops_per_scale``)."""
        return self.regression_crops_per_scale or self.crops_per_scale

    @property
    def scales(self) -> tuple[int, ...]:
        """Every scale crops are cut at: ``short_sides``, then the regression-only ones."""
        extra = [s for s in dict.fromkeys(self.regression_sides) if s not in self.short_sides]
        return (*self.short_sides, *extra)

    def quotas(self, short_side: int, label: int) -> dict[str, int]:
        """Crops per set wanted at one scale and class (0: the set takes none there)."""
        return {
            CLASSIFICATION: self.crops_per_scale if short_side in self.short_sides else 0,
            REGRESSION: (
                self.regression_crops
                if label == FOREGROUND and short_side in self.regression_sides
                else 0
            ),
        }

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able values (tuples as lists), as stored in the prepare stamp."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclass(frozen=True)
class CropSpec:
    """One sampled crop: where it is, its label and its regression target.

    ``size`` is the (width, height) of the resized image the window is cut from; ``target`` is
    already mirrored when ``flipped``; ``sets`` names the crop sets it goes into
    (:data:`CLASSIFICATION` and/or :data:`REGRESSION`).
    """

    short_side: int
    size: tuple[int, int]
    left: int
    top: int
    label: int
    inside: float
    target: Deltas
    sets: frozenset[str]
    flipped: bool = False

    @property
    def window(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + WINDOW, self.top + WINDOW)


def _positive_ints(values: tuple[int, ...]) -> bool:
    return all(not isinstance(v, bool) and isinstance(v, int) and v > 0 for v in values)


# -- geometry ---------------------------------------------------------------------------------
def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``short_side`` (as ``images.resize_short_side``)."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_box(box: Box, size: tuple[int, int], scaled: tuple[int, int]) -> Box:
    """Map a box from an image of ``size`` to the same image resized to ``scaled``.

    Multiplied before divided, so a pixel edge that lands on a whole pixel lands there exactly
    (169 * 224 / 338 is 112; 169 * (224 / 338) is 112.00000000000001, which made a crop exactly
    half inside the box background).
    """
    (w, h), (sw, sh) = size, scaled
    left, top, right, bottom = box
    return (left * sw / w, top * sh / h, right * sw / w, bottom * sh / h)


def intersection_area(a: Box, b: Box) -> float:
    """Area shared by two boxes with exclusive right/bottom edges (0 when they are apart)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def inside_fraction(window: Box, box: Box) -> float:
    """Share of ``window``'s area inside ``box``."""
    area = (window[2] - window[0]) * (window[3] - window[1])
    return intersection_area(window, box) / area


def label_for(
    window: Box,
    box: Box,
    foreground_min_inside: float = 0.5,
    background_max_inside: float = 0.5,
) -> int | None:
    """1 (foreground), 0 (background) or None (neither, only with non-default thresholds).

    Compared on areas, not on rounded fractions, so a window exactly half inside the box is
    foreground with the default thresholds (both definitions hold; foreground wins).
    """
    area = (window[2] - window[0]) * (window[3] - window[1])
    label = int(
        labels(intersection_area(window, box), area, foreground_min_inside, background_max_inside)
    )
    return None if label == UNLABELLED else label


def labels(
    inter: np.ndarray | float,
    area: float,
    foreground_min_inside: float,
    background_max_inside: float,
) -> np.ndarray:
    """The one labelling rule, for :func:`label_for` and the sampler alike: per intersection
    area ``inter`` of a window of ``area``, FOREGROUND when at least ``foreground_min_inside``
    of it is inside, else BACKGROUND when at most ``background_max_inside`` is, else
    UNLABELLED."""
    background = np.where(inter <= background_max_inside * area, BACKGROUND, UNLABELLED)
    return np.where(inter >= foreground_min_inside * area, FOREGROUND, background)


def box_deltas(box: Box, left: float, top: float) -> Deltas:
    """Box corners relative to a crop whose top-left corner is (left, top)."""
    return (box[0] - left, box[1] - top, box[2] - left, box[3] - top)


def flip_deltas(deltas: Deltas, window: int = WINDOW) -> Deltas:
    """Targets of the horizontally mirrored crop: x -> window - x swaps left and right."""
    dl, dt, dr, db = deltas
    return (window - dr, dt, window - dl, db)


# -- sampling ---------------------------------------------------------------------------------
#: At most this many window positions per axis are considered (a stride grid beyond it), which
#: bounds the work for extremely elongated photos.
MAX_POSITIONS = 2048


def _rng(seed: int, image_id: str, short_side: int, label: int) -> np.random.Generator:
    key = f"tiefjax-crops\x1f{int(seed)}\x1f{image_id}\x1f{short_side}\x1f{label}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:16], "big"))


def _positions(extent: int) -> np.ndarray:
    """Window origins along one axis of length ``extent`` (every pixel, or a stride grid)."""
    count = extent - WINDOW + 1
    if count <= MAX_POSITIONS:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, MAX_POSITIONS).round().astype(np.int64))


def window_overlaps(scaled: tuple[int, int], box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lefts, tops, areas): the area inside ``box`` of every window origin (tops x lefts).

    Separable: the overlap of a window with a box is (overlap in x) * (overlap in y).
    """
    lefts, tops = _positions(scaled[0]), _positions(scaled[1])
    ix = np.clip(np.minimum(lefts + WINDOW, box[2]) - np.maximum(lefts, box[0]), 0.0, None)
    iy = np.clip(np.minimum(tops + WINDOW, box[3]) - np.maximum(tops, box[1]), 0.0, None)
    return lefts, tops, np.outer(iy, ix)


def sample_crops(
    image_id: str, width: int, height: int, box: Box, config: PrepareConfig
) -> list[CropSpec]:
    """The crops of one image (geometry and labels only; deterministic for id, size, box, config).

    Per scale and class, distinct windows are drawn uniformly, without replacement, among all
    the window positions of that class (labelled exactly as :func:`label_for`), from a random
    stream of their own: first the classification set's ``crops_per_scale``, then as many more
    as the regression set wants beyond those (:meth:`PrepareConfig.quotas`); a set wanting ``n``
    takes the first ``n`` drawn. So sets sharing a scale share its crops, and the
    classification crops do not depend on the regression settings.

    Drawing among the valid positions, instead of the original's 25 uniform attempts kept when
    they happen to qualify, gives a class its crops whenever the photo has them: on catalog
    photos where the product fills most of the frame, background windows are a few percent of
    all positions and rejection sampling found almost none. Each kept crop is followed by its
    mirrored copy when ``config.flips``.
    """
    specs: list[CropSpec] = []
    area = float(WINDOW * WINDOW)
    for short_side in config.scales:
        scaled = scaled_size(width, height, short_side)
        if scaled[0] < WINDOW or scaled[1] < WINDOW:
            continue
        sbox = scale_box(box, (width, height), scaled)
        lefts, tops, inter = window_overlaps(scaled, sbox)
        classes = labels(inter, area, config.foreground_min_inside, config.background_max_inside)
        for label in (FOREGROUND, BACKGROUND):
            quotas = config.quotas(short_side, label)
            candidates = np.flatnonzero(classes == label)
            rng = _rng(config.seed, image_id, short_side, label)
            drawn = candidates[:0]
            for n in quotas.values():  # classification's first: see the docstring
                more = min(n, len(candidates)) - len(drawn)
                if more > 0:
                    rest = np.setdiff1d(candidates, drawn, assume_unique=True)
                    drawn = np.concatenate([drawn, rng.choice(rest, size=more, replace=False)])
            for rank in np.argsort(drawn, kind="stable"):  # in position order
                row, col = divmod(int(drawn[rank]), len(lefts))
                left, top = int(lefts[col]), int(tops[row])
                deltas = box_deltas(sbox, left, top)
                inside = float(inter[row, col]) / area
                sets = frozenset(name for name, n in quotas.items() if rank < n)
                crop = CropSpec(short_side, scaled, left, top, label, inside, deltas, sets)
                specs.append(crop)
                if config.flips:
                    specs.append(replace(crop, target=flip_deltas(deltas), flipped=True))
    return specs


# -- pixels -----------------------------------------------------------------------------------
def decode_size(width: int, height: int, config: PrepareConfig) -> tuple[int, int]:
    """Smallest decode size that still serves every scale of both sets (JPEG draft mode)."""
    return scaled_size(width, height, max(config.scales))


def render_crops(img: Image.Image, specs: Sequence[CropSpec]) -> Iterator[np.ndarray]:
    """Pixels (uint8 224x224x3) of each spec, cut from ``img`` resized to the spec's scale.

    ``img`` is the upright RGB photo, at full size or any size decoded in draft mode; each scale
    is resized once from it.
    """
    resized: dict[tuple[int, int], np.ndarray] = {}
    for spec in specs:
        pixels = resized.get(spec.size)
        if pixels is None:
            scaled = img.resize(spec.size, Image.Resampling.BILINEAR)
            pixels = resized[spec.size] = np.asarray(scaled)
        crop = pixels[spec.top : spec.top + WINDOW, spec.left : spec.left + WINDOW]
        if spec.flipped:
            crop = crop[:, ::-1]
        yield np.ascontiguousarray(crop)


def product_size(width: int, height: int, box: Box | None) -> tuple[int, int]:
    """Decode size at which ``box`` still covers at least 224x224 pixels (for draft mode)."""
    if box is None:
        return (WINDOW, WINDOW)
    bw, bh = max(box[2] - box[0], 1e-6), max(box[3] - box[1], 1e-6)
    return (
        min(width, int(np.ceil(width * WINDOW / bw))),
        min(height, int(np.ceil(height * WINDOW / bh))),
    )


def product_crop(img: Image.Image, box: Box | None, size: tuple[int, int]) -> np.ndarray:
    """The product (``box`` in pixels of an image of ``size``, or all of it) as uint8 224x224x3.

    ``img`` may have been decoded smaller than ``size`` (draft mode); the box is scaled to it.
    """
    if box is not None:
        box = scale_box(box, size, img.size)
    return np.asarray(crop_resize(img, box, (WINDOW, WINDOW)))


def encode_image(pixels: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """JPEG/PNG bytes of a uint8 RGB array, made with Pillow (what the datasets store)."""
    out = io.BytesIO()
    img = Image.fromarray(pixels)
    if image_format == "png":
        img.save(out, format="PNG", compress_level=1)
    else:
        img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """uint8 RGB array of JPEG/PNG bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))
