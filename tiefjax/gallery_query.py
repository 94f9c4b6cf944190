"""Gallery filters and sorts: what ``GET /api/images`` may ask of the catalog, as SQL pieces.

A :class:`CatalogQuery` says which images a gallery page lists (an id text, a state) and in
which order (id, the detection's foreground probability, or the IoU of detection and annotated
box). :meth:`tiefjax.store.Store.catalog_page` turns it into one SQL statement per page; the
pieces here are the WHERE clause and the sort key over the rows ``i`` (images), ``b`` (current
boxes) and ``d`` (detections) that the store joins.

States partition the catalog: ``annotated`` (a box drawn by a person), ``detected`` (no box,
but the locator found a product: a box that "accept detections" would write) and ``none``
(neither; a fallback detection, where the locator used the whole photo, is not a product box).
Sorting by probability lists only located images, by IoU only images with both boxes: the
others have no value to sort by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tiefjax.validate import BadRequest, check_text, shown

STATES = ("all", "annotated", "detected", "none")
SORTS = ("id", "probability", "iou")
ORDERS = ("asc", "desc")
MATCHES = ("substring", "prefix")
#: Longest id text a filter takes (ids are file stems; longer text matches nothing anyway).
Q_MAX = 200

_HAS_BOX = "b.image_id IS NOT NULL"
_HAS_PRODUCT = "(d.image_id IS NOT NULL AND d.fallback = 0)"
_STATE_SQL = {
    "all": "",
    "annotated": _HAS_BOX,
    "detected": f"NOT {_HAS_BOX} AND {_HAS_PRODUCT}",
    "none": f"NOT {_HAS_BOX} AND NOT {_HAS_PRODUCT}",
}
_INTERSECTION = (
    "max(0.0, min(b.right, d.right) - max(b.left, d.left)) * "
    "max(0.0, min(b.bottom, d.bottom) - max(b.top, d.top))"
)
_AREAS = "(b.right - b.left) * (b.bottom - b.top) + (d.right - d.left) * (d.bottom - d.top)"
#: The sort key of each sort, NULL where an image has none.
_KEY_SQL = {
    "id": "i.id",
    "probability": "d.score",
    "iou": f"({_INTERSECTION}) / ({_AREAS} - {_INTERSECTION})",
}
#: What an image needs to have a sort key.
_NEEDS = {
    "id": "",
    "probability": "d.image_id IS NOT NULL",
    "iou": f"{_HAS_BOX} AND d.image_id IS NOT NULL",
}


@dataclass(frozen=True)
class CatalogQuery:
    """Which images a gallery page lists and in which order (defaults: all, by id)."""

    q: str = ""  # id text, case-insensitive for ASCII letters
    match: str = "substring"  # "substring" | "prefix"
    state: str = "all"  # "all" | "annotated" | "detected" | "none"
    sort: str = "id"  # "id" | "probability" | "iou"
    order: str = "asc"  # "asc" | "desc"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("match", MATCHES),
            ("state", STATES),
            ("sort", SORTS),
            ("order", ORDERS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {shown(value)}")
        if len(self.q) > Q_MAX:
            raise BadRequest(f"q is longer than {Q_MAX} characters; shorten the id text")
        check_text(self.q)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CatalogQuery:
        """From query parameters (missing ones take their default; BadRequest names a bad one)."""
        fields = ("q", "match", "state", "sort", "order")
        return cls(**{k: params[k] for k in fields if k in params})

    def key_sql(self) -> str:
        """The sort key over ``i``, ``b``, ``d``."""
        return _KEY_SQL[self.sort]

    def where_sql(self) -> tuple[str, list[str]]:
        """The filter (``1`` for none) and its parameters."""
        parts, params = [_STATE_SQL[self.state], _NEEDS[self.sort]], []
        if self.q:
            pattern = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parts.append("i.id LIKE ? ESCAPE '\\'")
            params.append(pattern + "%" if self.match == "prefix" else f"%{pattern}%")
        return " AND ".join(p for p in parts if p) or "1", params

    def tiebreak_sql(self) -> str:
        """The id that orders equal keys: the detection's own column when sorting by
        probability, so the (score, image_id) index serves both the order and the seek."""
        return "d.image_id" if self.sort == "probability" else "i.id"

    def count_from(self) -> str:
        """The FROM clause that counts this listing with only the joins its filter reads,
        driven by the detections when every listed image has one (far fewer rows to visit)."""
        boxes = self.state != "all" or self.sort == "iou"
        needs = self.sort != "id" or self.state == "detected"
        reads = needs or self.state == "none"
        source = "images AS i"
        if needs:
            source = "detections AS d JOIN images AS i ON i.id = d.image_id"
        elif reads:
            source += " LEFT JOIN detections AS d ON d.image_id = i.id"
        if boxes:
            source += " LEFT JOIN boxes AS b ON b.image_id = i.id AND b.left IS NOT NULL"
        return source

    def direction(self) -> tuple[str, str]:
        """(SQL order keyword, keyset comparison) of this order."""
        return ("ASC", ">") if self.order == "asc" else ("DESC", "<")

    def describe(self) -> str:
        """What this listing holds, for messages (e.g. "images with a detection")."""
        return {
            "id": "the listing",
            "probability": "images with a detection",
            "iou": "images with both an annotated and a detected box",
        }[self.sort]
