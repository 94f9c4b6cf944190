"""Copy detection's counting: recall per transform, and what its misses are."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from PIL import Image

from tiefjax.copydetect import copy_detection
from tiefjax.errors import InvalidInput, NotFound


@dataclass
class _Hit:
    id: str
    score: float


@dataclass
class _Result:
    hits: list[_Hit]


class ScriptedSearcher:
    """Answers each query with the next scripted list of hits (or error), checking the copies."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.queries = 0

    def search_many(self, queries, k, mode, errors="raise"):
        assert errors == "return" and mode == "unsupervised" and k == 10
        assert all(isinstance(q, bytes) and q[:2] == b"\xff\xd8" for q in queries)  # JPEG copies
        self.queries += len(queries)
        out = []
        for _ in queries:
            answer = self.answers.pop(0)
            out.append(answer if isinstance(answer, Exception) else _Result(answer))
        return out


def _photos(tmp_path, ids):
    out = []
    for n, image_id in enumerate(ids):
        path = tmp_path / f"{image_id}.png"
        Image.new("RGB", (40, 30), (40 * n, 90, 200 - 40 * n)).save(path)
        out.append((image_id, path))
    return out


def test_recall_and_what_the_misses_are(tmp_path):
    photos = _photos(tmp_path, ["a-0", "a-1", "b-0"])
    h = _Hit
    searcher = ScriptedSearcher(
        [
            [h("a-0", 0.9), h("b-0", 0.5)],  # a-0 mirrored: found first
            [h("a-1", 0.9), h("a-0", 0.8)],  # a-0 cropped: its sibling first, 0.1 above
            [h("b-0", 0.9), h("a-1", 0.85)],  # a-1 mirrored: another product first, 0.05 above
            [h("a-1", 0.7)],  # a-1 cropped: found
            NotFound("undecodable"),  # b-0 mirrored: an error, counted as a miss
            [h("a-0", 0.6)],  # b-0 cropped: source not in the list at all
        ]
    )
    product_of = {"a-0": "a", "a-1": "a", "b-0": "b"}
    scores = copy_detection(searcher, photos, ["mirror", "crop"], product_of=product_of)
    assert searcher.queries == 6 and not searcher.answers
    assert scores.copies == {"mirror": 3, "crop": 3} and scores.errors == 1
    assert scores.recall("mirror") == pytest.approx(1 / 3) and scores.recall("crop", 1) == 1 / 3
    assert scores.recall(None, 1) == pytest.approx(2 / 6)
    assert scores.recall(None, 10) == pytest.approx(4 / 6)  # a-0 and a-1 in their top 10
    assert scores.same_product_misses == {"mirror": 0, "crop": 1}
    assert scores.gap_sum["crop"] == pytest.approx(0.1)
    assert scores.gap_sum["mirror"] == pytest.approx(0.05)
    # without products the misses are not classified
    searcher.answers = [[h("a-1", 0.9), h("a-0", 0.8)]]
    assert copy_detection(searcher, photos[:1], ["crop"]).same_product_misses == {"crop": 0}


def test_an_unknown_transform_is_named(tmp_path):
    with pytest.raises(InvalidInput, match=r"unknown transform\(s\) \['smudge'\]"):
        copy_detection(ScriptedSearcher([]), _photos(tmp_path, ["a-0"]), ["smudge"])
