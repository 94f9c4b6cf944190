"""The review queue's endpoints: what the editors ask people to annotate next.

- ``GET /api/review/boxes``: photos whose located box is least certain (scored when they were
  located and stored with the detection) and annotated photos whose detection disagrees with
  the box; one SQL query per page.
- ``GET /api/review/triplets``: references whose supervised and unsupervised rankings disagree
  most (or, without a ranking net, whose nearest neighbours are nearly tied), with the pair to
  judge; scored once per index build from its precomputed neighbours; a pair with an image
  already judged with that reference is left out.

Both page with ``limit`` and ``after``, the opaque cursor ``SCORE:ID`` of a page's ``next``.
Both follow the current detections and index, so they change after retraining and re-indexing.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tiefjax.review import (
    BOX_REASONS,
    DISAGREE_IOU,
    TRIPLET_REASONS,
    TripletScores,
    near_ties,
    rankings_disagreement,
)
from tiefjax.server.json_response import JSONResponse
from tiefjax.validate import BadRequest, check_id, parse_int, shown

if TYPE_CHECKING:
    from tiefjax.server.app import ServerState
    from tiefjax.store import ReviewItem

LIMIT_MAX = 200
#: Neighbours per reference the two rankings are compared over (as recall@10).
TRIPLET_K = 10
CURSOR_HINT = "pass a page's next as after (SCORE:ID), or leave after out to start at the top"


def parse_cursor(raw: str | None) -> tuple[float, str] | None:
    """``SCORE:ID`` (a page's ``next``) as ``(score, id)``; BadRequest naming the problem."""
    if raw is None:
        return None
    score_text, sep, image_id = raw.partition(":")
    try:
        score = float(score_text)
    except ValueError:
        score = math.nan
    if not sep or not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise BadRequest(f"after={shown(raw)} is not a review cursor: {CURSOR_HINT}")
    return score, check_id(image_id, "the id in after")


def cursor(score: float, image_id: str) -> str:
    """The ``after`` that continues right after this item (``repr``: the float round-trips)."""
    return f"{float(score)!r}:{image_id}"


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    return 20 if raw is None else parse_int(raw, "limit", 1, LIMIT_MAX)


def _box_item(item: ReviewItem) -> dict[str, Any]:
    from tiefjax.server.app import box_coords

    det = item.detection
    numbers = {"p": det.score, "iou": 1.0 - item.score}
    if item.iou is not None:
        numbers["iou"] = item.iou
    message = BOX_REASONS.get(item.reason, item.reason).format(**numbers)
    return {
        "id": item.image_id,
        "score": item.score,
        "reason": item.reason,
        "message": message,
        "detection": {**box_coords(det.box), "score": det.score, "fallback": det.fallback},
        "box": None if item.box is None else box_coords(item.box),
        "iou": item.iou,
    }


@dataclass(frozen=True)
class _Ranked:
    """One build's triplet scores, the usable references in queue order and their sort keys."""

    scored: TripletScores
    ids: tuple[str, ...]
    order: list[int]  # row positions, highest score first, then id
    keys: list[tuple[float, str]]  # (-score, id) of ``order``, for bisecting a cursor
    place: dict[str, int]  # reference id -> its row

    def pair(self, row: int) -> tuple[str, str, str]:
        ids = self.ids
        return ids[row], ids[self.scored.first[row]], ids[self.scored.second[row]]


class TripletQueue:
    """The triplet queue of one index build, computed on first use and kept until the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Any = None
        self._value: _Ranked | None = None

    def ranked(self, searcher: Any, modes: list[str]) -> _Ranked:
        key = (searcher.built_at, len(searcher.ids), tuple(modes))
        with self._lock:
            if self._key != key or self._value is None:
                self._value = _rank(searcher, modes)
                self._key = key
            return self._value


def _rank(searcher: Any, modes: list[str]) -> _Ranked:
    uns, uns_scores = searcher.neighbour_table("unsupervised")
    k = min(TRIPLET_K, uns.shape[1])
    if "supervised" in modes:
        sup, _ = searcher.neighbour_table("supervised")
        scored = rankings_disagreement(sup[:, :k], uns[:, :k])
    else:
        scored = near_ties(uns[:, :k], uns_scores[:, :k])
    ids = searcher.ids
    usable = [r for r in range(len(ids)) if scored.first[r] >= 0]
    keyed = sorted((-float(scored.score[r]), ids[r], r) for r in usable)
    order = [r for _, _, r in keyed]
    return _Ranked(scored, ids, order, [(k, i) for k, i, _ in keyed], {ids[r]: r for r in order})


def build_review_routes(
    state: ServerState, modes_of: Callable[[Any], list[str]]
) -> list[tuple[str, Callable[[Request], Any]]]:
    """``(path, endpoint)`` of the review queue, for :func:`tiefjax.server.app.build_routes`."""
    store = state.store
    triplets = TripletQueue()

    async def review_boxes(request: Request) -> Response:
        limit = _limit(request)
        after = parse_cursor(request.query_params.get("after"))
        items, total = await run_in_threadpool(
            store.box_review_page, limit + 1, after, DISAGREE_IOU
        )
        more = len(items) > limit
        items = items[:limit]
        return JSONResponse(
            {
                "total": total,
                "limit": limit,
                "next": cursor(items[-1].score, items[-1].image_id) if more else None,
                "items": [_box_item(item) for item in items],
            }
        )

    async def review_triplets(request: Request) -> Response:
        limit = _limit(request)
        after = parse_cursor(request.query_params.get("after"))
        searcher = await state.require_searcher()
        ranked = await run_in_threadpool(triplets.ranked, searcher, modes_of(searcher))
        judged = await run_in_threadpool(_judged, store)
        start = 0 if after is None else bisect.bisect_right(ranked.keys, (-after[0], after[1]))
        items: list[dict[str, Any]] = []
        for row in ranked.order[start:]:
            ref, a, b = ranked.pair(row)
            if judged.get(ref, set()) & {a, b}:
                continue
            if len(items) > limit:
                break
            score = float(ranked.scored.score[row])
            reason = ranked.scored.reason
            items.append(
                {"reference": ref, "first": a, "second": b, "score": score, "reason": reason,
                 "message": TRIPLET_REASONS[reason]}
            )  # fmt: skip
        done = sum(
            1
            for ref, seen in judged.items()
            if ref in ranked.place and seen & set(ranked.pair(ranked.place[ref])[1:])
        )
        more = len(items) > limit
        items = items[:limit]
        return JSONResponse(
            {
                "total": len(ranked.order) - done,
                "limit": limit,
                "reason": ranked.scored.reason,
                "next": cursor(items[-1]["score"], items[-1]["reference"]) if more else None,
                "items": items,
            }
        )

    return [("/review/boxes", review_boxes), ("/review/triplets", review_triplets)]


def _judged(store: Any) -> dict[str, set[str]]:
    """Reference -> the images judged with it in a stored triplet. A queued pair with either of
    them is left out, as the candidates leave out judged images."""
    judged: dict[str, set[str]] = {}
    for t in store.list_triplets():
        judged.setdefault(t.reference, set()).update((t.positive, t.negative))
    return judged
