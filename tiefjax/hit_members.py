"""A search hit's JSON members (``id``, ``box``, ``box_source``): the one place their layout is
written.

Every index build keeps each row's members pre-rendered (``tiefjax/index/row_table.py``), and
the server joins them with scores into answers; a hit whose image is no longer indexed shows a
null box and source. Light on imports: the server loads it before any index (or JAX) is.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

BOX_KEYS = ("left", "top", "right", "bottom")  # a box in JSON


def hit_members(image_id: str, box: Sequence[float] | None, source: str | None) -> bytes:
    """``"id":…,"box":{…},"box_source":…`` for one image (no braces: a score goes in front)."""
    box_json = None if box is None else dict(zip(BOX_KEYS, map(float, box), strict=True))
    return orjson.dumps({"id": image_id, "box": box_json, "box_source": source})[1:-1]
