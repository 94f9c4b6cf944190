"""The gallery's API: filters and sorts of GET /api/images, bulk "accept detections", and the
box each similar-image hit was matched with."""

from __future__ import annotations

import pytest
from _server_fakes import FakeSearcher, _jpeg
from starlette.testclient import TestClient

from tiefjax.catalog import init_workspace
from tiefjax.hit_members import hit_members
from tiefjax.server import ServerConfig, create_app
from tiefjax.store import Detection, Store
from tiefjax.workspace import Workspace

TOKEN = "gallery-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class RowSearcher(FakeSearcher):
    """The stand-in index, with the box each image was indexed with (like Searcher's)."""

    def indexed_json(self, hits) -> list:
        source = {"img0": "annotation"}
        return [hit_members(h.id, (1, 2, 30, 20), source.get(h.id, "detection")) for h in hits]


@pytest.fixture
def client(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(6):
        (tmp_path / "images" / f"img{i}.jpg").write_bytes(_jpeg(48, 40, seed=i))
    init_workspace(tmp_path / "ws", tmp_path / "images")
    ws = Workspace(tmp_path / "ws")
    with Store(ws.store_path) as store:
        store.put_box("img0", (1, 2, 30, 20))
        store.put_detections(
            [
                Detection("img0", (5, 5, 30, 20), 0.9, False),
                Detection("img1", (0, 0, 20, 20), 0.4, False),
                Detection("img2", (2, 2, 40, 30), 0.8, False),
                Detection("img3", (0, 0, 48, 40), 0.1, True),
            ]
        )
        ids = store.image_ids()
    app = create_app(ws, token=TOKEN, config=ServerConfig.tiny(), searcher=RowSearcher(ids))
    with TestClient(app) as c:
        yield c


def listed(client: TestClient, **params) -> list[str]:
    r = client.get("/api/images", params=params)
    assert r.status_code == 200, r.text
    return [image["id"] for image in r.json()["images"]]


def test_images_filter_and_sort(client: TestClient) -> None:
    assert listed(client, state="annotated") == ["img0"]
    assert listed(client, state="detected") == ["img1", "img2"]
    assert listed(client, state="none") == ["img3", "img4", "img5"]
    assert listed(client, q="G4") == ["img4"]
    assert listed(client, q="img", match="prefix", order="desc")[:2] == ["img5", "img4"]
    assert listed(client, sort="probability", order="desc") == ["img0", "img2", "img1", "img3"]
    assert listed(client, sort="iou") == ["img0"]


def test_keyset_pages_keep_the_filter_and_sort(client: TestClient) -> None:
    params = {"sort": "probability", "limit": 1}
    seen, after = [], None
    while True:
        body = client.get("/api/images", params={**params, **({"after": after} if after else {})})
        page = body.json()
        assert page["total"] == 4
        seen += [image["id"] for image in page["images"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ["img3", "img1", "img2", "img0"]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"state": "done"}, 400, "state must be one of all, annotated, detected, none"),
        ({"sort": "p"}, 400, "sort must be one of id, probability, iou"),
        ({"order": "down"}, 400, "order must be one of asc, desc"),
        ({"match": "glob"}, 400, "match must be one of substring, prefix"),
        ({"sort": "probability", "after": "img5"}, 422, "not in images with a detection"),
    ],
)
def test_bad_gallery_parameters_get_a_clear_error(client, params, status, message) -> None:
    r = client.get("/api/images", params=params)
    assert r.status_code == status
    assert message in r.json()["error"]["message"]


def test_accept_detections_saves_only_where_there_is_no_box(client: TestClient) -> None:
    images = [{"id": i, "version": v} for i, v in [("img0", 1), ("img1", 0), ("img3", 0)]]
    body = {"images": images, "overwrite": False}
    assert client.post("/api/boxes/accept-detections", json=body).status_code == 401
    r = client.post("/api/boxes/accept-detections", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "saved": [
            {
                "image_id": "img1",
                "left": 0.0,
                "top": 0.0,
                "right": 20.0,
                "bottom": 20.0,
                "version": 1,
            }
        ],
        "skipped": [{"id": "img0", "reason": "has_box"}, {"id": "img3", "reason": "no_product"}],
    }
    assert client.get("/api/images/img0").json()["box"]["left"] == 1.0  # kept


def test_accept_detections_overwrite_checks_versions(client: TestClient) -> None:
    url = "/api/boxes/accept-detections"
    stale = {"images": [{"id": "img0", "version": 7}], "overwrite": True}
    r = client.post(url, json=stale, headers=AUTH)
    assert r.status_code == 409 and "nothing was saved" in r.json()["error"]["message"]
    fresh = {"images": [{"id": "img0", "version": 1}], "overwrite": True}
    saved = client.post(url, json=fresh, headers=AUTH).json()["saved"]
    assert saved[0]["left"] == 5.0 and saved[0]["version"] == 2


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"images": [], "overwrite": False}, 400, "images must be a list of 1 to 200"),
        ({"images": [{"id": "img1"}], "overwrite": False}, 400, "must be {id, version}"),
        ({"images": [{"id": "img1", "version": -1}], "overwrite": False}, 400, "version of img1"),
        ({"images": [{"id": "img1", "version": 0}], "overwrite": 1}, 400, "overwrite must be"),
        ({"images": [{"id": "img1", "version": 0}]}, 400, "needs overwrite"),
        ({"images": [{"id": "nope", "version": 0}], "overwrite": False}, 404, "nope"),
        (
            {"images": [{"id": "img1", "version": 0}] * 2, "overwrite": False},
            422,
            "listed twice",
        ),
    ],
)
def test_bad_accept_requests_name_the_problem(client, body, status, message) -> None:
    r = client.post("/api/boxes/accept-detections", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_similar_hits_carry_the_box_they_matched_with(client: TestClient) -> None:
    hits = client.get("/api/images/img1/similar", params={"k": 2}).json()["hits"]
    assert hits[0] == {
        "id": "img0",
        "score": 1.0,
        "box": {"left": 1.0, "top": 2.0, "right": 30.0, "bottom": 20.0},
        "box_source": "annotation",
    }
    assert hits[1]["box_source"] == "detection"
    search = client.post("/api/search", files={"image": ("q.jpg", _jpeg(40, 40))}).json()
    assert all(h["box_source"] in ("annotation", "detection") for h in search["hits"])
