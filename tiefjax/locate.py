"""Bounding-box extraction (OverFeat style): one encoder pass per photo and scale.

The classifier and the four regressors are convolutions over the encoder map, so one pass over
a resized photo scores every 224x224 window (stride 16) at once. Windows whose foreground
probability passes the threshold contribute their regressed box, mapped back to the photo with
the exact window origin ``16 * cell`` (the original used ``16 * cell + 9``). The boxes are
combined as the original did: the mean box's centre splits the windows, and each corner is the
mean over the windows on that corner's side (a window left of the centre sees the left edge
best). ``combine = "weighted"`` weights those means by the foreground probability. No window
above the threshold gives the whole photo, flagged as ``fallback``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.images import IMAGENET_MEAN, Box, float_box, resize_short_side, scale_box
from tiefjax.inference import ShardedApply, power_of_two_parts
from tiefjax.models import compiler_options, compute_dtype, encoder_program, load_encoder
from tiefjax.nets.alexnet import STRIDE, WINDOW
from tiefjax.review import box_spread, box_uncertainty
from tiefjax.workspace import Workspace

COMBINE_MODES = ("sides", "weighted")
#: uint8 colour whose normalised value is ~0: padding that looks like "no signal" to the encoder
_PAD_RGB = np.round(IMAGENET_MEAN * 255).astype(np.uint8)


@dataclass(frozen=True)
class LocateConfig:
    """Settings of ``[locate]``."""

    short_sides: tuple[int, ...] = field(
        default=(320, 448),
        metadata={"help": "photo resized so its shorter side is each of these (as [prepare])"},
    )
    threshold: float = field(
        default=0.5, metadata={"help": "foreground probability a window needs to count"}
    )
    combine: str = field(
        default="sides",
        metadata={"help": "sides (the original's per-side means) or weighted (by probability)"},
    )
    pad_multiple: int = field(
        default=64,
        metadata={"help": "resized photos are padded up to a multiple of this (fewer compiles)"},
    )
    batch_size: int = field(
        default=0,
        metadata={
            "help": "most photos of one padded shape per encoder call when locating many (used "
            "as the power of two at or below it); 0 = 16 on accelerators, 1 on the CPU, where "
            "batching gains nothing and every batch size is one more compile"
        },
    )

    @property
    def decode_short_side(self) -> int:
        """Photos decoded with at least this shorter side lose nothing the locator sees."""
        return max(self.short_sides)

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_MODES:
            raise InvalidInput(
                f"[locate] combine must be one of {COMBINE_MODES}, not {self.combine!r}"
            )
        if not self.short_sides or min(self.short_sides) < WINDOW:
            raise InvalidInput(f"[locate] short_sides must all be >= {WINDOW}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidInput("[locate] threshold must lie in [0, 1]")
        if self.batch_size < 0:
            raise InvalidInput("[locate] batch_size must be >= 0 (0 = automatic)")


@dataclass(frozen=True)
class Located:
    """The product box of one photo, in its pixels; ``fallback`` = no window was foreground."""

    box: Box
    probability: float  # highest window foreground probability
    fallback: bool
    windows: int  # windows that passed the threshold
    spread: float = 0.0  # 1 - mean IoU of those windows' boxes with the box (review.box_spread)

    def scaled(self, scale: tuple[float, float]) -> Located:
        """This result with its box mapped by ``scale`` (a draft-decoded photo's, say)."""
        return dataclasses.replace(self, box=scale_box(self.box, scale))

    def to_json(self) -> dict[str, Any]:
        left, top, right, bottom = self.box
        return {
            "box": {"left": left, "top": top, "right": right, "bottom": bottom},
            "probability": self.probability,
            "fallback": self.fallback,
            "windows": self.windows,
            "spread": self.spread,
        }


@dataclass(frozen=True)
class Windows:
    """Every scored window of one photo, all scales together, in original-photo pixels."""

    probability: np.ndarray  # (n,)
    boxes: np.ndarray  # (n, 4) regressed product boxes
    centres: np.ndarray  # (n, 2) window centres (x, y)


#: (photo index, padded uint8 pixels, scale factor, resized shape before padding)
_Resized = tuple[int, np.ndarray, float, tuple[int, ...]]


def _pad_to(pixels: np.ndarray, multiple: int) -> np.ndarray:
    h, w, _ = pixels.shape
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (ph, pw) == (h, w):
        return pixels
    out = np.empty((ph, pw, 3), np.uint8)
    out[...] = _PAD_RGB
    out[:h, :w] = pixels
    return out


def combine_windows(windows: Windows, mask: np.ndarray, weighted: bool = False) -> np.ndarray:
    """The original's "expected bounding box" of the windows selected by ``mask``."""
    boxes, centres = windows.boxes[mask], windows.centres[mask]
    weights = windows.probability[mask] if weighted else np.ones(len(boxes))
    mean = np.average(boxes, axis=0, weights=weights)
    cx, cy = (mean[0] + mean[2]) / 2, (mean[1] + mean[3]) / 2
    sides = (
        (0, centres[:, 0] < cx),  # left edge: windows left of the centre
        (1, centres[:, 1] < cy),  # top edge: windows above it
        (2, centres[:, 0] > cx),  # right edge
        (3, centres[:, 1] > cy),  # bottom edge
    )
    out = mean.copy()
    for coord, side in sides:
        if side.any():
            out[coord] = np.average(boxes[side, coord], weights=weights[side])
    return out


class Locator:
    """Trained classifier + regressors over the encoder map; reusable across many photos."""

    def __init__(
        self,
        encoder_params: Any,
        classifier: tuple[Any, Any],
        regressor: tuple[Any, Any],
        target_mean: np.ndarray,
        target_std: np.ndarray,
        config: LocateConfig | None = None,
        regressor_encoder_params: Any | None = None,
        dtype: Any = jnp.float32,
    ):
        self.config = config or LocateConfig()
        self._params = {
            "encoder": encoder_params,
            "classifier": classifier[1],
            "regressor": regressor[1],
            "mean": jnp.asarray(target_mean, jnp.float32),
            "std": jnp.asarray(target_std, jnp.float32),
        }
        if regressor_encoder_params is not None:
            self._params["regressor_encoder"] = regressor_encoder_params
        self._heads = (classifier[0], regressor[0])
        self._dtype = dtype

    @classmethod
    def load(cls, ws: Workspace, config: LocateConfig | None = None) -> Locator:
        """The workspace's trained heads; NotFound when the classifier or regressor is missing."""
        from tiefjax.train.artifacts import load_trained

        classifier = load_trained(ws, "classifier")
        regressor = load_trained(ws, "regressor")
        missing = [n for n, t in (("classifier", classifier), ("regressor", regressor)) if not t]
        if missing:
            steps = " and ".join(f"`tiefjax train {ws.root} {n}`" for n in missing)
            raise NotFound(f"box extraction needs a trained {' and '.join(missing)}: run {steps}")
        assert classifier is not None and regressor is not None
        base = None
        if classifier.encoder_params is None or regressor.encoder_params is None:
            base = load_encoder(ws).params
        encoder = classifier.encoder_params if classifier.encoder_params is not None else base
        reg_encoder = regressor.encoder_params if regressor.encoder_params is not None else base
        return cls(
            encoder,
            (classifier.head, classifier.params),
            (regressor.head, regressor.params),
            np.asarray(regressor.meta["mean"], np.float32),
            np.asarray(regressor.meta["std"], np.float32),
            config or ws.section("locate", LocateConfig),
            regressor_encoder_params=None if reg_encoder is encoder else reg_encoder,
            dtype=compute_dtype(ws),
        )

    @property
    def batch_size(self) -> int:
        """Photos per call when locating many (``[locate] batch_size``, resolved): automatic is
        16 on accelerators and one per local device on the CPU."""
        if self.config.batch_size:
            return self.config.batch_size
        return jax.local_device_count() if jax.default_backend() == "cpu" else 16

    @functools.cached_property
    def _scorer(self) -> ShardedApply:
        """Encoder and heads in one program over every local device (one compile per padded
        photo shape)."""
        encode = encoder_program(self._dtype)
        clf, reg = self._heads

        def run(params: dict[str, Any], pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
            clf_map = encode(params["encoder"], pixels)
            reg_map = clf_map
            if "regressor_encoder" in params:
                reg_map = encode(params["regressor_encoder"], pixels)
            logits = clf.apply({"params": params["classifier"]}, clf_map)
            probability = jax.nn.softmax(logits.astype(jnp.float32), -1)[..., 1]
            deltas = reg.apply({"params": params["regressor"]}, reg_map)
            return probability, deltas * params["std"] + params["mean"]

        cap = max(self.batch_size, jax.local_device_count())
        return ShardedApply(run, self._params, cap=cap, compiler_options=compiler_options())

    def score_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(B, H, W, 3)`` -> foreground probability ``(B, h-10, w-10)`` and deltas.

        ``deltas`` (``(.., 4)``) are box corners relative to each window's origin, in the
        pixels given.
        """
        return self._scorer(np.asarray(batch))

    def windows(self, img: Image.Image) -> Windows:
        """Score every window of ``img`` at every configured scale."""
        return self.windows_many([img])[0]

    def windows_many(self, images: Sequence[Image.Image]) -> list[Windows]:
        """:meth:`windows` of many photos, batching those that pad to the same shape.

        Photos of one catalog mostly share an aspect ratio, so at each scale most of them pad
        to one shape and go through the encoder together: one device call per shape and batch
        part instead of one per photo. Parts are powers of two (13 photos: 8 + 4 + 1), which
        bounds the compiled shapes without spending encoder work on blank padding photos; a
        photo's windows do not depend on which photos share its batch.
        """
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
        for short_side in self.config.short_sides:
            by_shape: dict[tuple[int, ...], list[_Resized]] = {}
            for i, img in enumerate(images):
                resized, scale = resize_short_side(img, short_side)
                pixels = np.asarray(resized)
                padded = _pad_to(pixels, self.config.pad_multiple)
                by_shape.setdefault(padded.shape, []).append((i, padded, scale, pixels.shape))
            for members in by_shape.values():
                start = 0
                for size in power_of_two_parts(len(members), self.batch_size):
                    part = members[start : start + size]
                    start += size
                    probability, deltas = self.score_maps(np.stack([m[1] for m in part]))
                    for (i, _, scale, shape), prob, delta in zip(
                        part, probability, deltas, strict=True
                    ):
                        found[i].append(_photo_windows(prob, delta, shape, scale))
        return [
            Windows(*(np.concatenate([w[k] for w in per_scale]) for k in range(3)))
            for per_scale in found
        ]

    def locate(self, img: Image.Image) -> Located:
        """The product box of ``img`` (an RGB photo) in its own pixels."""
        return self.locate_many([img])[0]

    def locate_many(self, images: Sequence[Image.Image]) -> list[Located]:
        """:meth:`locate` of many photos, their encoder passes batched (:meth:`windows_many`)."""
        return [
            self._located(img, found)
            for img, found in zip(images, self.windows_many(images), strict=True)
        ]

    def locate_decoded(
        self, decoded: Sequence[tuple[Image.Image, tuple[float, float]]]
    ) -> list[Located]:
        """:meth:`locate_many` of ``(photo, scale)`` pairs from
        :func:`~tiefjax.images.load_rgb_scaled`, boxes mapped back to the original photos."""
        located = self.locate_many([img for img, _ in decoded])
        return [found.scaled(scale) for found, (_, scale) in zip(located, decoded, strict=True)]

    def uncertainty(self, found: Located) -> tuple[float, str]:
        """The review queue's (score, reason) of a located photo, at this locator's threshold."""
        return box_uncertainty(
            found.probability, found.fallback, found.spread, self.config.threshold
        )

    def _located(self, img: Image.Image, found: Windows) -> Located:
        keep = found.probability >= self.config.threshold
        best = float(found.probability.max()) if found.probability.size else 0.0
        if not keep.any():
            return Located((0.0, 0.0, float(img.width), float(img.height)), best, True, 0)
        box = combine_windows(found, keep, weighted=self.config.combine == "weighted")
        box = np.clip(box, 0, [img.width, img.height, img.width, img.height])
        left, top, right, bottom = float_box(box)
        if right - left < 1 or bottom - top < 1:  # degenerate regression: trust the photo
            return Located((0.0, 0.0, float(img.width), float(img.height)), best, True, 0)
        spread = box_spread(found.boxes[keep], box)
        return Located((left, top, right, bottom), best, False, int(keep.sum()), spread)


def _photo_windows(
    probability: np.ndarray, deltas: np.ndarray, shape: tuple[int, ...], scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability, photo-pixel boxes and centres of the windows lying wholly inside a resized
    photo of ``shape`` (not in its padding), from its score maps."""
    rows = (shape[0] - WINDOW) // STRIDE + 1
    cols = (shape[1] - WINDOW) // STRIDE + 1
    probability, deltas = probability[:rows, :cols], deltas[:rows, :cols]
    oy, ox = np.meshgrid(np.arange(rows) * STRIDE, np.arange(cols) * STRIDE, indexing="ij")
    origin = np.stack([ox, oy, ox, oy], -1).astype(np.float32)
    return (
        probability.reshape(-1),
        ((origin + deltas) / scale).reshape(-1, 4),
        (np.stack([ox, oy], -1) + WINDOW / 2).reshape(-1, 2) / scale,
    )
