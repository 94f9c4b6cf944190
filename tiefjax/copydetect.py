"""Copy detection: does a copy of a catalog photo (mirrored, cropped, padded, re-compressed ...)
find its source photo first?

For every catalog photo and every transform of :mod:`tiefjax.augment` one seeded copy is made
and searched for exactly as an upload is (:meth:`tiefjax.search.Searcher.search_many`: decode,
box, encode, index), so the figure measures what a user of ``tiefjax score`` or the site gets.
Recall@1 is the share of copies whose first hit is their source, recall@10 the share with the
source among the first ten.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tiefjax.augment import TRANSFORMS, copy_of
from tiefjax.errors import InvalidInput, TiefjaxError

K = 10
PHOTOS_PER_CALL = 4  # copies of this many photos share one encoder batch


@dataclass
class CopyScores:
    """Recall@1 / recall@10 per transform and over every copy, for one search mode."""

    mode: str
    hits_at_1: dict[str, int] = field(default_factory=dict)
    hits_at_k: dict[str, int] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    #: misses whose first hit is another photo of the source's product (when products are known)
    same_product_misses: dict[str, int] = field(default_factory=dict)
    #: summed score gap from the first hit down to the source, over misses with it in the top K
    gap_sum: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    def recall(self, transform: str | None = None, at: int = 1) -> float:
        """Recall@``at`` (1 or 10) of one transform, or of every copy when ``transform`` is None."""
        hits = self.hits_at_1 if at == 1 else self.hits_at_k
        names = [transform] if transform else list(self.copies)
        total = sum(self.copies[n] for n in names)
        return sum(hits[n] for n in names) / total if total else 0.0


def photo_copies(path: Path, photo_index: int, transforms: Sequence[str], seed: int) -> list[bytes]:
    """The JPEG bytes (quality 95) of one copy of ``path`` per transform; copy ``t`` of photo
    ``i`` is seeded by ``(seed, i, t)``, so every run makes the same copies."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    out = []
    for t, name in enumerate(transforms):
        buf = io.BytesIO()
        copy_of(rgb, name, (seed, photo_index, t)).save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def copy_detection(
    searcher: object,
    photos: Sequence[tuple[str, Path]],
    transforms: Sequence[str] = tuple(TRANSFORMS),
    mode: str = "unsupervised",
    seed: int = 0,
    product_of: Mapping[str, str] | None = None,
) -> CopyScores:
    """Search one copy per transform of every ``(id, path)`` in ``photos`` with ``searcher``
    (a :class:`tiefjax.search.Searcher`) and count where its source ranks; with
    ``product_of`` (image id -> product), also how many misses found a photo of the same
    product first."""
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise InvalidInput(f"unknown transform(s) {unknown}; choose from {', '.join(TRANSFORMS)}")
    zeros = dict.fromkeys(transforms, 0)
    scores = CopyScores(mode, dict(zeros), dict(zeros), dict(zeros), dict(zeros))
    scores.gap_sum = dict.fromkeys(transforms, 0.0)
    t0 = time.perf_counter()
    indexed = list(enumerate(photos))
    for start in range(0, len(indexed), PHOTOS_PER_CALL):
        group = indexed[start : start + PHOTOS_PER_CALL]
        queries = [q for i, (_, path) in group for q in photo_copies(path, i, transforms, seed)]
        results = searcher.search_many(queries, K, mode, errors="return")  # type: ignore[attr-defined]
        sources = [image_id for _, (image_id, _) in group for _ in transforms]
        for name, image_id, res in zip(
            list(transforms) * len(group), sources, results, strict=True
        ):
            scores.copies[name] += 1
            if isinstance(res, TiefjaxError):
                scores.errors += 1
                continue
            ids = [h.id for h in res.hits]
            scores.hits_at_1[name] += int(ids[:1] == [image_id])
            scores.hits_at_k[name] += int(image_id in ids[:K])
            if ids[:1] == [image_id] or not ids:
                continue
            if product_of is not None and product_of.get(ids[0]) == product_of.get(image_id):
                scores.same_product_misses[name] += 1
            if image_id in ids[:K]:
                scores.gap_sum[name] += res.hits[0].score - res.hits[ids.index(image_id)].score
    scores.seconds = time.perf_counter() - t0
    return scores
