"""Test helpers for the server tests: a stand-in Searcher and tiny images made in memory."""

from __future__ import annotations

import io
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tiefjax.errors import NotFound
from tiefjax.hit_members import hit_members


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


@dataclass(frozen=True)
class Result:
    box: tuple[float, float, float, float]
    probability: float
    fallback: bool
    hits: list[Hit]
    copy_of: str | None = None
    copy_score: float | None = None


class FakeSearcher:
    """Answers like tiefjax.search.Searcher, from a fixed neighbour table."""

    def __init__(self, ids: list[str], modes=("unsupervised", "supervised")):
        self.ids = list(ids)
        self.info = {"modes": list(modes), "size": len(ids), "recall_at_10": 1.0}
        self.built_at = time.time() - 5
        self.batches: list[int] = []
        self.decoded_sizes: list[tuple[int, int]] = []
        self.reloads = 0

    def neighbours(self, image_id, k, mode):
        if image_id not in self.ids:
            raise NotFound(f"{image_id} is not in the index")
        if mode not in self.info["modes"]:
            raise NotFound(f"no {mode} index")
        others = [i for i in self.ids if i != image_id]
        return [Hit(i, 1.0 - 0.1 * n) for n, i in enumerate(others)][:k]

    def indexed_json(self, hits):
        """JSON members of each hit (no boxes: the stand-in indexes none)."""
        return [hit_members(h.id, None, None) for h in hits]

    def neighbour_members(self, image_id, k, mode):
        hits = self.neighbours(image_id, k, mode)
        return [h.score for h in hits], self.indexed_json(hits)

    def neighbour_table(self, mode):
        """Row positions and scores of every image's neighbours (as ``neighbours``)."""
        position = {i: n for n, i in enumerate(self.ids)}
        hits = [self.neighbours(i, len(self.ids), mode) for i in self.ids]
        ids = np.array([[position[h.id] for h in row] for row in hits]).reshape(len(self.ids), -1)
        scores = np.array([[h.score for h in row] for row in hits]).reshape(len(self.ids), -1)
        return ids, scores

    decode_short_side = 448

    def search_many(self, queries, k, mode, errors="raise"):
        """Each photo query's box is (1, 2, width - 1, height - 2) in the upload's pixels."""
        self.batches.append(len(queries))
        time.sleep(0.01)
        results = []
        for q in queries:
            (sx, sy), img = q.scale, q.image
            self.decoded_sizes.append(img.size)
            box = (1.0, 2.0, img.width * sx - 1.0, img.height * sy - 2.0)
            results.append(Result(box, 0.9, False, self._hits(k)))
        return results

    def _hits(self, k):
        return [Hit(i, 0.5) for i in self.ids[:k]]

    def reload_if_changed(self):
        self.reloads += 1
        return False


def _jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG")
    return out.getvalue()


def _png(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _bomb_png(w: int = 30000, h: int = 30000) -> bytes:
    """A valid-looking PNG header claiming w x h pixels, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
