"""Train/test split by image: a stable hash of (seed, image id), independent of the other images.

Every crop and every triplet of one image lands in that image's split, so no photo is seen in
both training and evaluation. The split of an image depends only on its id, the seed and the test
fraction: adding or removing images never moves the others, and the same catalog splits the same
way on every machine and every run (unlike the original, which took the first 5 % of new rows in
database order).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from tiefjax.errors import InvalidInput

Split = Literal["train", "test"]
SPLITS: tuple[Split, Split] = ("train", "test")


def split_unit(image_id: str, seed: int) -> float:
    """A number in [0, 1), uniform over ids, fixed for (seed, image_id)."""
    digest = hashlib.sha256(f"tiefjax-split\x1f{int(seed)}\x1f{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(image_id: str, test_fraction: float, seed: int) -> Split:
    """``"test"`` for about ``test_fraction`` of the ids, ``"train"`` for the rest."""
    if not 0.0 <= test_fraction <= 1.0:
        raise InvalidInput(f"test_fraction must be between 0 and 1, got {test_fraction}")
    return "test" if split_unit(image_id, seed) < test_fraction else "train"
