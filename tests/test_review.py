"""The review queue: uncertainty scores, the box queue in the store, both endpoints."""

from __future__ import annotations

import numpy as np
import pytest
from _server_fakes import FakeSearcher, _jpeg
from starlette.testclient import TestClient

from tiefjax.catalog import init_workspace
from tiefjax.review import box_spread, box_uncertainty, near_ties, rankings_disagreement
from tiefjax.server import ServerConfig, create_app
from tiefjax.server.review import cursor, parse_cursor
from tiefjax.store import Box, Detection, Store
from tiefjax.validate import BadRequest
from tiefjax.workspace import Workspace


# -- scores ---------------------------------------------------------------------------------------
def test_box_uncertainty_ranks_misses_doubt_and_scatter() -> None:
    assert box_uncertainty(0.02, True, 0.0, 0.5) == (1.0, "no_window")
    sure = box_uncertainty(0.99, False, 0.05, 0.5)
    doubt = box_uncertainty(0.55, False, 0.05, 0.5)
    scatter = box_uncertainty(0.99, False, 0.6, 0.5)
    assert doubt[1] == "near_threshold" and doubt[0] == pytest.approx(0.9)
    assert scatter == (0.6, "regressors_disagree")
    assert sure[0] < scatter[0] < doubt[0] < 1.0
    # the threshold counts: p = 0.8 is doubtful at a threshold of 0.8, sure at 0.2
    assert box_uncertainty(0.8, False, 0.0, 0.8)[0] > box_uncertainty(0.8, False, 0.0, 0.2)[0]


def test_box_spread_is_zero_when_windows_agree_and_grows_as_they_scatter() -> None:
    box = np.array([10.0, 10.0, 50.0, 90.0])
    assert box_spread(np.tile(box, (5, 1)), box) == pytest.approx(0.0)
    near = box_spread(box + np.array([[2, 2, 2, 2], [-2, -2, -2, -2]]), box)
    far = box_spread(box + np.array([[20, 0, 20, 0], [-10, 30, -10, 30]]), box)
    assert 0.0 < near < far <= 1.0
    assert box_spread(np.zeros((0, 4)), box) == 0.0


def test_rankings_disagreement_finds_the_pair_the_rankings_swap() -> None:
    unsupervised = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    supervised = np.array([[1, 2, 3, 4], [4, 2, 3, 9]])  # row 1: 4 up from last, 1 gone
    scored = rankings_disagreement(supervised, unsupervised)
    assert scored.score[0] == 0.0 and scored.first[0] == -1  # identical lists: nothing to ask
    assert (scored.first[1], scored.second[1]) == (4, 1)
    # 4: rank 0 vs 3 (gap 3); 1: rank 0 vs absent = 4 (gap 4) -> (3 + 4) / (2 * 4)
    assert scored.score[1] == pytest.approx(7 / 8)


def test_near_ties_scores_a_tie_one_and_even_spacing_zero() -> None:
    ids = np.array([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.75, 0.75, 0.6], [0.9, 0.9, 0.0, 0.0]])
    scored = near_ties(ids, scores)
    assert scored.score[0] == pytest.approx(0.0)
    assert scored.score[1] == pytest.approx(1.0)
    assert (scored.first[1], scored.second[1]) == (6, 7)
    assert (scored.first[2], scored.second[2]) == (5, 6)  # padding (-1) is never paired


def test_cursor_round_trips_and_bad_ones_say_what_to_send() -> None:
    assert parse_cursor(cursor(0.1 + 0.2, "a:b")) == (0.1 + 0.2, "a:b")
    for bad in ("", "0.5", "x:abc", "1.5:abc", "nan:abc", "0.5:"):
        with pytest.raises(BadRequest, match="after=|id in after"):
            parse_cursor(bad)


# -- the box queue in the store and over HTTP ---------------------------------------------------
@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    """Six photos: four detections scored, one agreeing annotation, one disagreeing."""
    (tmp_path / "images").mkdir()
    for i in range(6):
        (tmp_path / "images" / f"img{i}.jpg").write_bytes(_jpeg(60, 50, seed=i))
    init_workspace(tmp_path / "ws", tmp_path / "images")
    ws = Workspace(tmp_path / "ws")
    with Store(ws.store_path) as store:
        store.put_detections(
            [
                Detection("img0", Box(5, 5, 40, 40), 0.99, False, 0.2, "regressors_disagree"),
                Detection("img1", Box(0, 0, 60, 50), 0.1, True, 1.0, "no_window"),
                Detection("img2", Box(5, 5, 40, 40), 0.55, False, 0.9, "near_threshold"),
                Detection("img3", Box(5, 5, 40, 40), 0.9, False, 0.2, "regressors_disagree"),
                Detection("img4", Box(5, 5, 40, 40), 0.9, False, 0.5, "regressors_disagree"),
                Detection("img5", Box(0, 0, 20, 20), 0.9, False),  # stored before scoring
            ]
        )
        store.put_box("img4", (6, 6, 40, 40))  # agrees: leaves the queue
        store.put_box("img5", (30, 25, 60, 50))  # disagrees (IoU 0): queued at 1.0
    return ws


def test_store_queue_orders_by_score_and_pages_by_cursor(workspace) -> None:
    with Store(workspace.store_path) as store:
        items, total = store.box_review_page(10)
        assert total == 5
        assert [(i.image_id, i.reason) for i in items] == [
            ("img1", "no_window"),
            ("img5", "disagrees_with_box"),
            ("img2", "near_threshold"),
            ("img0", "regressors_disagree"),
            ("img3", "regressors_disagree"),
        ]
        assert items[1].iou == pytest.approx(0.0) and items[1].box == Box(30, 25, 60, 50)
        first, _ = store.box_review_page(2)
        rest, _ = store.box_review_page(10, (first[-1].score, first[-1].image_id))
        assert [i.image_id for i in first + rest] == [i.image_id for i in items]
        store.put_box("img2", (5, 5, 40, 40))  # annotated as detected: off the queue
        assert "img2" not in [i.image_id for i in store.box_review_page(10)[0]]


def test_review_endpoints_page_and_refuse_bad_input(workspace) -> None:
    with Store(workspace.store_path) as store:
        ids = store.image_ids()
    app = create_app(workspace, token="t", config=ServerConfig.tiny(), searcher=FakeSearcher(ids))
    with TestClient(app) as client:
        page = client.get("/api/review/boxes", params={"limit": 2}).json()
        assert page["total"] == 5 and [i["id"] for i in page["items"]] == ["img1", "img5"]
        assert "whole photo" in page["items"][0]["message"]
        assert "IoU 0.00" in page["items"][1]["message"]
        rest = client.get("/api/review/boxes", params={"after": page["next"]}).json()
        assert [i["id"] for i in rest["items"]] == ["img2", "img0", "img3"]
        assert rest["next"] is None
        for params, words in (
            ({"limit": "0"}, "limit must be a whole number from 1 to 200"),
            ({"limit": "many"}, "limit must be"),
            ({"after": "img3"}, "is not a review cursor"),
        ):
            r = client.get("/api/review/boxes", params=params)
            assert r.status_code == 400 and words in r.json()["error"]["message"]

        # triplets: the fake's rankings agree, so it is scored... by both modes' disagreement
        trip = client.get("/api/review/triplets", params={"limit": 3}).json()
        assert trip["reason"] == "rankings_disagree" and trip["items"] == []
        r = client.get("/api/review/triplets", params={"after": "2:x"})
        assert r.status_code == 400 and "not a review cursor" in r.json()["error"]["message"]


def test_triplet_queue_leaves_out_judged_pairs(workspace) -> None:
    with Store(workspace.store_path) as store:
        ids = store.image_ids()
    searcher = FakeSearcher(ids, modes=("unsupervised",))
    app = create_app(workspace, token="t", config=ServerConfig.tiny(), searcher=searcher)
    with TestClient(app) as client:
        page = client.get("/api/review/triplets").json()
        assert page["reason"] == "near_tie" and page["total"] == len(ids)
        first = page["items"][0]
        with Store(workspace.store_path) as store:
            store.add_triplet(first["reference"], first["second"], first["first"])
        again = client.get("/api/review/triplets").json()
        assert again["total"] == len(ids) - 1
        assert first["reference"] not in [i["reference"] for i in again["items"]]
        half = client.get("/api/review/triplets", params={"limit": 2}).json()
        rest = client.get("/api/review/triplets", params={"after": half["next"]}).json()
        refs = [i["reference"] for i in half["items"] + rest["items"]]
        assert refs == [i["reference"] for i in again["items"]]


def test_the_locator_scores_what_it_finds() -> None:
    """One window: nothing to disagree, scored by the classifier; four windows regressing boxes
    at their own offsets: they disagree; no foreground window: a miss, scored 1."""
    from test_locate import MEAN, STD, _constant_heads, _photo

    from tiefjax.locate import LocateConfig, Locator
    from tiefjax.nets.alexnet import STRIDE, WINDOW, init_encoder_params

    def locator(logit: float) -> Locator:
        config = LocateConfig(short_sides=(WINDOW,), threshold=0.5)
        clf, reg = _constant_heads(logit, np.array([0.0, 0.0, 224.0, 224.0], np.float32))
        return Locator(init_encoder_params(0), clf, reg, MEAN, STD, config)

    unsure = locator(0.4)  # p = 0.60, near the threshold
    found = unsure.locate(_photo(WINDOW, WINDOW))
    assert not found.fallback and found.spread == pytest.approx(0.0, abs=1e-6)
    score, reason = unsure.uncertainty(found)
    assert reason == "near_threshold"
    assert score == pytest.approx(1 - (found.probability - 0.5) / 0.5)
    sure = locator(6.0)
    scattered = sure.locate(_photo(WINDOW + 3 * STRIDE, WINDOW))  # 4 windows, boxes 16 px apart
    assert scattered.windows == 4 and 0.0 < scattered.spread < 0.5
    assert sure.uncertainty(scattered) == (pytest.approx(scattered.spread), "regressors_disagree")
    missed = locator(-6.0).locate(_photo(300, 240))
    assert locator(-6.0).uncertainty(missed) == (1.0, "no_window")
