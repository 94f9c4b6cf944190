"""How unsure the model is, per photo and per reference: what the review queue asks people first.

Active learning by uncertainty: an annotation is worth most where the model is least sure.

- **Boxes**, scored where the locator runs (``tiefjax index``, the demo's evaluation) and stored
  with the detection: the best window's foreground probability close to the threshold, the
  windows' regressed boxes disagreeing with each other (a committee that does not agree), or no
  window passing at all. The server adds, at query time, annotated photos whose detection
  disagrees with the annotation (:data:`DISAGREE_IOU`).
- **Triplets**, scored from an index build's precomputed neighbours: the reference whose
  supervised and unsupervised top-k disagree most, with the pair that shows it (one image the
  ranking net puts near, the raw features far, and one the other way round); without a ranking
  net, the two nearest neighbours whose scores are closest to a tie.

NumPy only: the server imports this without JAX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Reason codes, with what each means to the person reviewing (the server fills in the numbers).
BOX_REASONS = {
    "no_window": "no window looked like a product, so the whole photo was used",
    "near_threshold": "the classifier is unsure (best window p = {p:.2f}, near the threshold)",
    "regressors_disagree": "the windows' boxes disagree (mean IoU with the box {iou:.2f})",
    "disagrees_with_box": "the detection differs from the annotated box (IoU {iou:.2f})",
}
TRIPLET_REASONS = {
    "rankings_disagree": "the trained and the raw-feature rankings disagree about these two",
    "near_tie": "these two are nearly tied as the reference's nearest neighbours",
}
#: An annotated photo whose detection overlaps its box less than this is queued for review.
DISAGREE_IOU = 0.5


def box_spread(boxes: np.ndarray, box: np.ndarray) -> float:
    """``1 - mean IoU`` of the windows' regressed ``boxes`` (n, 4) with the combined ``box``:
    0 when every window agrees, towards 1 as they scatter."""
    from tiefjax.train.tasks import box_iou

    if len(boxes) == 0:
        return 0.0
    ious = box_iou(np.asarray(boxes, np.float64), np.broadcast_to(box, (len(boxes), 4)))
    return float(np.clip(1.0 - ious.mean(), 0.0, 1.0))


def box_uncertainty(
    probability: float, fallback: bool, spread: float, threshold: float
) -> tuple[float, str]:
    """(score in [0, 1], reason code) of one located photo; higher = review sooner.

    A fallback (no window passed) scores 1: a catalog photo shows a product, so the locator
    missed it. Otherwise the larger of the classifier's closeness to its threshold
    (``1 - |p - t| / max(t, 1 - t)``) and the regressors' ``spread``.
    """
    if fallback:
        return 1.0, "no_window"
    near = 1.0 - abs(probability - threshold) / max(threshold, 1.0 - threshold, 1e-9)
    near = float(np.clip(near, 0.0, 1.0))
    spread = float(np.clip(spread, 0.0, 1.0))
    return (near, "near_threshold") if near >= spread else (spread, "regressors_disagree")


@dataclass(frozen=True)
class TripletScores:
    """Per reference (index row): how uncertain, the pair to judge (row positions), why."""

    score: np.ndarray  # (N,) float in [0, 1]
    first: np.ndarray  # (N,) int row position, -1 = nothing to ask
    second: np.ndarray  # (N,) int
    reason: str


def rankings_disagreement(supervised: np.ndarray, unsupervised: np.ndarray) -> TripletScores:
    """Where the two rankings of each reference's top-k (``(N, k)`` row positions, -1 = none)
    disagree most.

    ``first`` is the image the supervised ranking places highest relative to where the
    unsupervised one places it (k = not in its top-k), ``second`` the other way round; the
    score is their two rank gaps over ``2k``. Identical lists score 0.
    """
    sup = np.asarray(supervised, np.int64)
    uns = np.asarray(unsupervised, np.int64)
    k = sup.shape[1]
    ranks = np.arange(k)
    uns_rank_of_sup = _rank_in(sup, uns, k)  # (N, k): where uns puts each supervised hit
    sup_rank_of_uns = _rank_in(uns, sup, k)
    gap_sup = np.where(sup >= 0, uns_rank_of_sup - ranks, -1)
    gap_uns = np.where(uns >= 0, sup_rank_of_uns - ranks, -1)
    ja, jb = gap_sup.argmax(1), gap_uns.argmax(1)
    rows = np.arange(len(sup))
    ga, gb = gap_sup[rows, ja], gap_uns[rows, jb]
    first, second = sup[rows, ja], uns[rows, jb]
    usable = (ga > 0) & (gb > 0) & (first != second)
    score = np.where(usable, (ga + gb) / (2.0 * k), 0.0)
    return TripletScores(
        score, np.where(usable, first, -1), np.where(usable, second, -1), "rankings_disagree"
    )


def _rank_in(items: np.ndarray, ranking: np.ndarray, k: int) -> np.ndarray:
    """For every entry of ``items`` (N, k), its position in the same row of ``ranking``
    (k when absent)."""
    match = (items[:, :, None] == ranking[:, None, :]) & (items[:, :, None] >= 0)
    return np.where(match.any(2), match.argmax(2), k)


def near_ties(neighbours: np.ndarray, scores: np.ndarray) -> TripletScores:
    """The two adjacent neighbours (``(N, k)`` row positions and scores, best first) whose
    scores are closest, relative to the spread of the reference's top-k.

    Evenly spaced scores give 0, an exact tie 1: the raw features cannot tell which of the two
    is the more similar, so a person's answer teaches the most.
    """
    ids = np.asarray(neighbours, np.int64)
    s = np.asarray(scores, np.float64)
    k = ids.shape[1]
    valid = (ids[:, :-1] >= 0) & (ids[:, 1:] >= 0)
    gaps = np.where(valid, s[:, :-1] - s[:, 1:], np.inf)
    j = gaps.argmin(1)
    rows = np.arange(len(ids))
    count = (ids >= 0).sum(1)
    last = s[rows, np.maximum(count - 1, 0)]
    width = np.maximum(s[:, 0] - last, 1e-9)
    even = width / np.maximum(count - 1, 1)  # the gap were the scores evenly spaced
    usable = count >= 2
    score = np.where(usable, 1.0 - np.clip(gaps[rows, j] / even, 0.0, 1.0), 0.0)
    first = np.where(usable, ids[rows, j], -1)
    second = np.where(usable, ids[rows, np.minimum(j + 1, k - 1)], -1)
    return TripletScores(score, first, second, "near_tie")
