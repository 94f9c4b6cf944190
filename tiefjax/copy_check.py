"""Copy check: an uploaded photo that is a copy of a catalog photo finds that photo first.

The descriptor is made to find the same product (pretraining teaches it to ignore background,
framing and colour), so a padded, cropped or re-coloured copy of a catalog photo scores its
source and the other photos of the same product almost alike: 91 % of the copies that missed
their source found a sibling photo first (docs/quality.md). Pixels settle it. Each of the
upload's first hits has its catalog photo aligned with the upload (mirrored or not; at the
same extent, as a copy resized whole keeps it, or at the same pixel scale, as a copy cropped,
padded or turned at the catalog's resolution keeps it; turned by up to 9 degrees; at every
shift) and scored by the normalised cross-correlation of their colours where they overlap:
masked NCC (Padfield, "Masked object registration in the Fourier domain", 2012), every shift
at once from a few FFTs. A coarse pass in grey at 24 pixels keeps each photo's two best
alignments; a fine pass at 48 pixels tries them unturned and turned, in grey near the coarse
shift, and scores the best in colour. A hit scoring at least the threshold is the copy's
source. A copy both resized and cropped or padded keeps neither scale: it is not aligned, and
the descriptor's order stands.

Opponent colours (luminance, red-green, yellow-blue) make the score indifferent to brightness,
contrast and a colour cast (each channel is normalised over the overlap), while the chroma
channels still tell a brown wooden backdrop from a grey one of the same lightness.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import fft

COARSE_SIDE = 24  # longer side of a catalog photo in the coarse pass (grey)
COARSE_KEEP = 2  # best coarse poses per photo the fine pass starts from
FINE_SIDE = 48  # ... and in the fine pass (grey, the final score in colour)
MIN_SIDE = 12  # an upload's fine view shorter than this (or enlarged) is not aligned
ANGLES = (-9.0, -6.0, -3.0, 3.0, 6.0, 9.0)  # turns the fine pass tries besides none
FINE_RADIUS = 2  # fine pixels around the coarse shift the fine pass searches
PHASES = (0.0, 1 / 3, 2 / 3)  # sub-pixel offsets (fine pixels) tried for the best photos ...
PHASED = 3  # ... this many of them
MIN_OVERLAP = 0.9  # the overlap must cover this share of the smaller image ...
MIN_SHARE = 0.25  # ... and this share of the larger one
WORK_SIDE = 4 * FINE_SIDE  # the upload is shrunk to this longer side before any turning

View = tuple[np.ndarray, np.ndarray]  # pixels (h, w, channels) float32, mask (h, w) float32


@dataclass(frozen=True)
class _Centred:
    """A view ready for NCC: channels-first pixels minus their mean over the mask (zero outside
    it), the mask, the per-pixel sum of squares over channels, and the mask's area; ``stack``
    holds the three as one (channels + 2, h, w) array, cut into windows in one go."""

    pixels: np.ndarray
    mask: np.ndarray
    squares: np.ndarray
    area: float

    @classmethod
    def of(cls, pixels: np.ndarray, mask: np.ndarray) -> _Centred:
        return cls(pixels, mask, (pixels * pixels).sum(0), float(mask.sum()))

    @functools.cached_property
    def stack(self) -> np.ndarray:
        return np.concatenate([self.pixels, self.mask[None], self.squares[None]])


@dataclass(frozen=True)
class CatalogPhoto:
    """What the check needs of one catalog photo: its coarse and fine views and its longer
    side in original pixels (for the same-pixel-scale alignment)."""

    coarse: View
    fine: _Centred
    fine_grey: _Centred
    long_side: float


@dataclass(frozen=True)
class _Pose:
    """An alignment of the upload: mirrored, turned by ``angle`` degrees, then scaled so one
    working pixel is ``scale`` x the view's side pixels."""

    flip: bool
    angle: float
    scale: float


def catalog_photo(img: Image.Image, long_side: float) -> CatalogPhoto:
    """The views of a decoded catalog photo (any size: only its shape and look matter) whose
    original longer side is ``long_side`` pixels."""
    rgb = img.convert("RGB")
    longer = max(rgb.size)
    fine = _centred(_view(rgb, FINE_SIDE / longer, None, colour=True))
    return CatalogPhoto(
        _view(rgb, COARSE_SIDE / longer, None, colour=False), fine, _grey(fine), float(long_side)
    )


def copy_scores(
    upload: Image.Image, pixel_size: float, photos: Sequence[CatalogPhoto | None]
) -> list[float | None]:
    """How well each catalog photo aligns with ``upload`` (masked NCC, -1..1; None where a
    photo is missing). ``pixel_size`` is original upload pixels per pixel of ``upload`` (it
    may have been decoded smaller)."""
    present = [(i, p) for i, p in enumerate(photos) if p is not None]
    out: list[float | None] = [None] * len(photos)
    if not present:
        return out
    cands = [p for _, p in present]
    work, pixel_size = _working_copy(upload.convert("RGB"), pixel_size)
    views = _PosedViews(work)
    poses = _coarse_poses(views, pixel_size, cands)
    found = {k: _fine_score(views, starts, cands[k]) for k, starts in enumerate(poses) if starts}
    # the best few again with the upload resampled a third of a pixel over: a photo whose
    # stripes fell between the fine pixels' grid lines is not penalised for it
    for k in sorted(found, key=lambda k: -found[k][0])[:PHASED]:
        score, pose, corner = found[k]
        for phase in ((y, x) for y in PHASES for x in PHASES if y or x):
            shifted = views.get(pose, colour=True, phase=phase)
            score = max(score, _ncc_near(shifted, cands[k].fine, corner, 1))
        found[k] = (score, pose, corner)
    for k, (i, _) in enumerate(present):
        out[i] = found[k][0] if k in found else None
    return out


def _working_copy(img: Image.Image, pixel_size: float) -> tuple[Image.Image, float]:
    longer = max(img.size)
    if longer <= WORK_SIDE:
        return img, pixel_size
    f = WORK_SIDE / longer
    size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
    return img.resize(size, Image.Resampling.BOX), pixel_size * longer / WORK_SIDE


def _coarse_poses(
    views: _PosedViews, pixel_size: float, cands: list[CatalogPhoto]
) -> list[list[tuple[_Pose, tuple[float, float]]]]:
    """Each photo's best few unturned poses in the coarse pass, best first, and where the
    upload's centre then falls in the photo (coarse pixels); none for a photo the upload is
    too small to be aligned with (its view would be enlarged or under ``MIN_SIDE``)."""
    longer, shorter = max(views.work.size), min(views.work.size)
    # the same extent (a copy resized whole), shared by every photo; the same pixel size (a
    # copy cropped, padded or turned at the catalog's resolution), one per photo size
    scales: list[tuple[float, float | None]] = [(1.0 / longer, None)]
    scales += [(pixel_size / side, side) for side in sorted({c.long_side for c in cands})]
    scales = [(s, only) for s, only in scales if 1 >= s * FINE_SIDE >= MIN_SIDE / shorter]
    poses: list[_Pose] = []
    coarse: list[View] = []
    pairs: list[tuple[int, int]] = []
    for flip in (False, True):
        for scale, only in scales:
            poses.append(_Pose(flip, 0.0, scale))
            coarse.append(views.raw(poses[-1], COARSE_SIDE, colour=False))
            pairs += [
                (len(poses) - 1, k) for k, c in enumerate(cands) if only in (None, c.long_side)
            ]
    if not pairs:
        return [[] for _ in cands]
    found: list[list[tuple[float, int, tuple[int, int]]]] = [[] for _ in cands]
    scores, shifts = _ncc_every_shift(coarse, [c.coarse for c in cands], pairs)
    for (q, k), s, shift in zip(pairs, scores, shifts, strict=True):
        found[k].append((float(s), q, shift))
    out = []
    for tries in found:
        tries.sort(key=lambda t: -t[0])
        out.append(
            [
                (poses[q], (dy + coarse[q][1].shape[0] / 2, dx + coarse[q][1].shape[1] / 2))
                for _, q, (dy, dx) in tries[:COARSE_KEEP]
            ]
        )
    return out


def _fine_score(
    views: _PosedViews, starts: list[tuple[_Pose, tuple[float, float]]], photo: CatalogPhoto
) -> tuple[float, _Pose, tuple[int, int]]:
    """The colour NCC at fine resolution: each coarse pose, unturned and turned about the
    upload's centre, is tried in grey near its coarse shift, and the best is scored in
    colour; that score, pose and corner."""
    ratio = FINE_SIDE / COARSE_SIDE
    best = (-np.inf, starts[0][0], (0, 0))
    for pose, centre in starts:
        for angle in (0.0, *ANGLES):
            posed = _Pose(pose.flip, angle, pose.scale)
            view = views.get(posed, colour=False)
            h, w = view.mask.shape
            corner = (round(centre[0] * ratio - h / 2), round(centre[1] * ratio - w / 2))
            score = _ncc_near(view, photo.fine_grey, corner, FINE_RADIUS)
            if score > best[0]:
                best = (score, posed, corner)
    _, posed, corner = best
    score = _ncc_near(views.get(posed, colour=True), photo.fine, corner, FINE_RADIUS)
    return score, posed, corner


# -- views --------------------------------------------------------------------------------------
def _opponent(rgb: np.ndarray) -> np.ndarray:
    """Luminance, red-green and yellow-blue channels of an RGB array."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b, r - g, 0.5 * (r + g) - b], -1)


def _view(
    img: Image.Image,
    factor: float,
    mask: Image.Image | None,
    colour: bool,
    phase: tuple[float, float] = (0.0, 0.0),
) -> View:
    """``img`` scaled by ``factor`` in opponent colours (luminance alone unless ``colour``), and
    its mask; ``phase`` (y, x) starts the sampling grid that many view pixels in."""
    box = None
    if phase == (0.0, 0.0):
        size = (max(4, round(img.width * factor)), max(4, round(img.height * factor)))
    else:
        size = (
            max(4, int(img.width * factor - phase[1])),
            max(4, int(img.height * factor - phase[0])),
        )
        x0, y0 = phase[1] / factor, phase[0] / factor
        box = (
            x0,
            y0,
            min(img.width, x0 + size[0] / factor),
            min(img.height, y0 + size[1] / factor),
        )
    pixels = _opponent(np.asarray(img.resize(size, Image.Resampling.BOX, box)))
    if not colour:
        pixels = pixels[..., :1]
    if mask is None:
        valid = np.ones(pixels.shape[:2], np.float32)
    else:  # only pixels wholly inside the turned photo count
        valid = (np.asarray(mask.resize(size, Image.Resampling.BOX, box)) > 254).astype(np.float32)
    return pixels, valid


def _turned(work: Image.Image, flip: bool, angle: float) -> tuple[Image.Image, Image.Image | None]:
    """The upload mirrored and turned, and the mask of its own pixels (None: all of them)."""
    img, mask = work, None
    if angle:
        mask = Image.new("L", img.size, 255).rotate(
            angle, Image.Resampling.NEAREST, expand=True, fillcolor=0
        )
        img = img.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    if flip:
        img = ImageOps.mirror(img)
        mask = ImageOps.mirror(mask) if mask is not None else None
    return img, mask


class _PosedViews:
    """Views of the upload in any pose: each turn made once, each fine view (grey and colour)
    once for all the photos it meets."""

    def __init__(self, work: Image.Image):
        self.work = work
        self._turns: dict[tuple[bool, float], tuple[Image.Image, Image.Image | None]] = {}
        self._fine: dict[tuple[_Pose, bool, tuple[float, float]], _Centred] = {}

    def raw(
        self, pose: _Pose, side: int, colour: bool, phase: tuple[float, float] = (0.0, 0.0)
    ) -> View:
        key = (pose.flip, pose.angle)
        if key not in self._turns:
            self._turns[key] = _turned(self.work, *key)
        img, mask = self._turns[key]
        return _view(img, pose.scale * side, mask, colour, phase)

    def get(self, pose: _Pose, colour: bool, phase: tuple[float, float] = (0.0, 0.0)) -> _Centred:
        """The fine view, centred for :func:`_ncc_near`."""
        if (pose, True, phase) not in self._fine:
            view = _centred(self.raw(pose, FINE_SIDE, True, phase))
            self._fine[pose, True, phase] = view
            self._fine[pose, False, phase] = _grey(view)
        return self._fine[pose, colour, phase]


# -- masked NCC ----------------------------------------------------------------------------------
def _grey(view: _Centred) -> _Centred:
    """The luminance channel alone of a centred colour view."""
    return _Centred.of(view.pixels[:1], view.mask)


def _centred(view: View) -> _Centred:
    pixels, mask = view
    area = float(mask.sum())
    mean = (pixels * mask[..., None]).sum((0, 1)) / max(area, 1.0)
    return _Centred.of(
        np.ascontiguousarray(np.moveaxis((pixels - mean) * mask[..., None], -1, 0)), mask
    )


def _ncc_from_sums(
    n: np.ndarray,
    sa: np.ndarray,
    sb: np.ndarray,
    sab: np.ndarray,
    saa: np.ndarray,
    sbb: np.ndarray,
    smaller: np.ndarray,
    larger: np.ndarray,
) -> np.ndarray:
    """NCC over the overlap from its sums (channel axis 1 in ``sa``/``sb``), -1 where the
    overlap is too small (against the smaller and the larger image's areas) or flat."""
    n = np.maximum(np.rint(n), 1.0)
    cov = sab - (sa * sb).sum(1) / n
    var_a = saa - (sa * sa).sum(1) / n
    var_b = sbb - (sb * sb).sum(1) / n
    ok = (
        (n >= MIN_OVERLAP * smaller) & (n >= MIN_SHARE * larger) & (var_a > 3 * n) & (var_b > 3 * n)
    )
    return np.where(ok, cov / np.sqrt(np.maximum(var_a * var_b, 1e-9)), -1.0)


def _ncc_every_shift(
    queries: list[View], photos: list[View], pairs: list[tuple[int, int]]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Best masked NCC over every shift for each (query, photo) pair, and that shift (where the
    query's top-left corner sits in the photo)."""
    rows = _fast_len(max(v[0].shape[0] for v in queries) + max(v[0].shape[0] for v in photos))
    cols = _fast_len(max(v[0].shape[1] for v in queries) + max(v[0].shape[1] for v in photos))

    def spectra(views: list[View]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        channels = views[0][0].shape[-1]
        x = np.zeros((len(views), channels, rows, cols), np.float32)
        m = np.zeros((len(views), rows, cols), np.float32)
        for i, view in enumerate(views):
            c = _centred(view)
            x[i, :, : c.mask.shape[0], : c.mask.shape[1]] = c.pixels
            m[i, : c.mask.shape[0], : c.mask.shape[1]] = c.mask
        return fft.rfft2(x), fft.rfft2(m), fft.rfft2((x * x).sum(1))

    fa, fam, faa = spectra(photos)
    fb, fbm, fbb = (np.conj(s) for s in spectra(queries))
    q = np.array([p[0] for p in pairs])
    k = np.array([p[1] for p in pairs])

    def corr(spectrum: np.ndarray) -> np.ndarray:
        return fft.irfft2(spectrum, s=(rows, cols))

    areas = np.array([v[1].sum() for v in queries])[q], np.array([v[1].sum() for v in photos])[k]
    smaller, larger = np.minimum(*areas)[:, None, None], np.maximum(*areas)[:, None, None]
    ncc = _ncc_from_sums(
        corr(fam[k] * fbm[q]),
        corr(fa[k] * fbm[q][:, None]),
        corr(fam[k][:, None] * fb[q]),
        corr((fa[k] * fb[q]).sum(1)),
        corr(faa[k] * fbm[q]),
        corr(fam[k] * fbb[q]),
        smaller,
        larger,
    )
    flat = ncc.reshape(len(pairs), -1)
    at = flat.argmax(1)
    shifts = []
    for (_, ki), a in zip(pairs, at, strict=True):
        dy, dx = divmod(int(a), cols)
        height, width = photos[ki][1].shape
        shifts.append((dy if dy < height else dy - rows, dx if dx < width else dx - cols))
    return flat[np.arange(len(pairs)), at], shifts


def _ncc_near(query: _Centred, photo: _Centred, corner: tuple[int, int], radius: int) -> float:
    """Best masked NCC for the query's top-left corner within ``radius`` of ``corner`` in the
    photo, computed directly (a few dozen shifts: a matrix product for each sum)."""
    channels, h, w = query.pixels.shape
    span = 2 * radius + 1
    top, left = corner[0] - radius, corner[1] - radius
    block = _block(photo.stack, top, left, (span + h - 1, span + w - 1))
    windows = _windows(block, (h, w), channels + 2)  # (shifts, pixels + mask + squares, h * w)
    under_query = windows @ query.mask.reshape(h * w)  # photo sums over the query's mask
    b = query.stack.reshape(channels + 2, h * w)
    under_photo = windows[:, channels] @ np.delete(b, channels, 0).T  # query sums, photo mask
    ncc = _ncc_from_sums(
        under_query[:, channels][None],
        under_query[:, :channels].T[None],
        under_photo[:, :channels].T[None],
        np.einsum("scp,cp->s", windows[:, :channels], b[:channels])[None],
        under_query[:, channels + 1][None],
        under_photo[:, channels][None],
        np.array(min(query.area, photo.area)),
        np.array(max(query.area, photo.area)),
    )
    return float(ncc.max())


def _block(arr: np.ndarray, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    """``arr[:, top:top+size[0], left:left+size[1]]`` with zeros where it runs outside."""
    out = np.zeros((arr.shape[0], *size), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size[0], arr.shape[1]), min(left + size[1], arr.shape[2])
    if y1 > y0 and x1 > x0:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = arr[:, y0:y1, x0:x1]
    return out


def _windows(block: np.ndarray, shape: tuple[int, int], channels: int) -> np.ndarray:
    """Every ``shape`` window of a (channels, H, W) block as rows: (shifts, channels, pixels)."""
    views = np.lib.stride_tricks.sliding_window_view(block, shape, axis=(1, 2))
    return np.ascontiguousarray(views.transpose(1, 2, 0, 3, 4)).reshape(
        -1, channels, shape[0] * shape[1]
    )


def _fast_len(n: int) -> int:
    """An FFT size at least ``n`` that pocketfft does fast."""
    return int(fft.next_fast_len(n, real=True))
