"""Annotation history, annotator tokens and similarity marks: in the store, the API and the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from _server_fakes import FakeSearcher, _jpeg
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tiefjax import history, triplet_marks
from tiefjax.catalog import init_workspace
from tiefjax.errors import Conflict, InvalidInput, NotFound
from tiefjax.server import ServerConfig, create_app
from tiefjax.store import Detection, ImageRecord, Store
from tiefjax.workspace import Workspace

TOKEN = "server-token-1"


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        (images / f"p{i}.jpg").write_bytes(_jpeg(64, 48, seed=i))
    init_workspace(tmp_path / "ws", images)
    return Workspace(tmp_path / "ws")


@pytest.fixture()
def store(workspace):
    with Store(workspace.store_path) as s:
        yield s


@pytest.fixture()
def client(workspace):
    with Store(workspace.store_path) as s:
        ids = s.image_ids()
    app = create_app(workspace, token=TOKEN, config=ServerConfig.tiny(), searcher=FakeSearcher(ids))
    with TestClient(app) as c:
        yield c


def _actions(changes) -> list[tuple[str, str, str]]:
    return [(c.annotator, c.action, c.image_id) for c in changes]


# -- store ---------------------------------------------------------------------------------------
def test_every_box_and_triplet_write_is_recorded_newest_first(store):
    store.put_box("p0", (1, 2, 30, 40), by="ann")
    store.put_box("p0", (1, 2, 30, 40), by="ann")  # the same box again: no change, no record
    store.put_box("p0", (2, 2, 30, 40), expected_version=1, by="bob")
    store.delete_box("p0", by="ann")
    t = store.add_triplet("p1", "p2", "p3", by="bob")
    store.add_triplet("p1", "p2", "p3", by="bob")  # stored already: not a change
    store.delete_triplet(t.id, by="ann")
    store.put_detections([Detection("p4", (3, 3, 20, 20), 0.9, False)])
    store.accept_detections({"p4": 0}, by="bob")

    changes, more = store.changes()
    assert more is None
    assert _actions(changes) == [
        ("bob", "box.accepted", "p4"),
        ("ann", "triplet.deleted", "p1"),
        ("bob", "triplet.added", "p1"),
        ("ann", "box.deleted", "p0"),
        ("bob", "box.saved", "p0"),
        ("ann", "box.saved", "p0"),
    ]
    assert changes[4].detail == {"version": 2, "box": [2, 2, 30, 40], "previous": [1, 2, 30, 40]}
    assert changes[3].detail == {"version": 3, "previous": [2, 2, 30, 40]}
    assert changes[1].detail == {"triplet": t.id, "positive": "p2", "negative": "p3"}
    assert changes[0].detail["previous"] is None
    assert _actions(store.changes(image_id="p1")[0]) == [
        ("ann", "triplet.deleted", "p1"),
        ("bob", "triplet.added", "p1"),
    ]
    assert [c.action for c in store.changes(annotator="bob")[0]] == [
        "box.accepted",
        "triplet.added",
        "box.saved",
    ]


def test_history_pages_by_cursor(store):
    for i in range(7):
        store.put_box("p0", (1, 1, 10 + i, 10), by="ann")
    first, after_first = store.changes(limit=3)
    second, after_second = store.changes(before=after_first, limit=3)
    third, after_third = store.changes(before=after_second, limit=3)
    ids = [c.id for c in first + second + third]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7 and after_third is None
    assert [c.detail["box"][2] for c in first + second + third] == list(range(16, 9, -1))
    assert store.changes(limit=7)[1] is None  # a full last page has no next page
    with pytest.raises(InvalidInput, match="1 to 500"):
        store.changes(limit=0)


def test_a_rolled_back_write_leaves_no_history(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put_box("p0", (1, 1, 10, 10), by="ann")
        store.add_triplet("p1", "p2", "p3", by="ann")
        raise RuntimeError("the request failed after the writes")
    assert store.changes() == ([], None) and store.get_box("p0") is None
    with pytest.raises(NotFound):  # one bad triplet: none of the batch is stored or recorded
        store.add_triplets([("p1", "p2", "p3"), ("p1", "p2", "nope")], by="ann")
    assert store.changes() == ([], None) and store.count_triplets() == 0


def test_a_photo_that_no_longer_fits_its_box_is_recorded_as_init(store):
    store.put_box("p0", (1, 1, 60, 40), by="ann")
    rec = store.get_image("p0")
    store.upsert_image(ImageRecord("p0", rec.path, 32, 24, "changed"))
    assert _actions(store.changes(limit=1)[0]) == [("init", "box.deleted", "p0")]


def test_removing_images_records_the_annotations_that_go_with_them(store):
    store.put_box("p0", (1, 1, 10, 10), by="ann")
    kept = store.add_triplet("p1", "p2", "p3", by="ann")
    gone = store.add_triplet("p2", "p0", "p4", by="ann")
    also = store.add_triplet("p5", "p4", "p0", by="ann")
    assert store.remove_images(["p0", "nope"], by="init") == 1
    changes, _ = store.changes(annotator="init")
    assert [(c.action, c.image_id, c.detail.get("triplet")) for c in changes] == [
        ("triplet.deleted", "p5", also.id),
        ("triplet.deleted", "p2", gone.id),
        ("box.deleted", "p0", None),
    ]
    assert [t.id for t in store.list_triplets()] == [kept.id]


def test_triplets_delete_together_or_not_at_all(store):
    a = store.add_triplet("p1", "p2", "p3")
    b = store.add_triplet("p1", "p2", "p4")
    with pytest.raises(NotFound, match="no triplet with id 999"):
        store.delete_triplets([a.id, 999], by="ann")
    assert store.count_triplets() == 2
    assert store.delete_triplets([a.id, b.id, a.id], by="ann") == 2
    assert store.count_triplets() == 0
    assert [c.action for c in store.changes(annotator="ann")[0]] == ["triplet.deleted"] * 2


def test_annotator_tokens_are_hashed_named_and_revocable(store, workspace):
    token = store.add_annotator("alice")
    assert store.annotator_of(token) == "alice" and store.annotator_of("guess") is None
    with sqlite3.connect(workspace.store_path) as db:  # reads the write-ahead log too
        stored = db.execute("SELECT * FROM annotators").fetchall()
    assert len(stored) == 1 and token not in stored[0] and history.token_hash(token) in stored[0]
    store.put_box("p0", (1, 1, 10, 10), by="alice")
    assert [(a.name, a.changes) for a in store.annotators()] == [("alice", 1)]
    with pytest.raises(Conflict, match="already an annotator 'alice'"):
        store.add_annotator("alice")
    for bad in ("", "owner", "import", "a b", "x" * 41, "-x"):
        with pytest.raises(InvalidInput):
            store.add_annotator(bad)
    store.remove_annotator("alice")
    assert store.annotator_of(token) is None and store.annotators() == []
    assert store.changes()[0][0].annotator == "alice"  # the history keeps the name
    with pytest.raises(NotFound, match="no annotator 'alice'"):
        store.remove_annotator("alice")


# -- marks -> triplets ---------------------------------------------------------------------------
def test_marks_expand_by_rank_and_group():
    triplets = triplet_marks.expand("r", same=["s"], more=["m"], less=["l"])
    assert sorted(triplets) == sorted(
        [
            ("r", "s", "m"),
            ("r", "s", "l"),
            ("r", "m", "l"),
            ("s", "r", "m"),
            ("s", "r", "l"),
        ]
    )
    assert triplet_marks.expand("r", [], ["m1", "m2"], ["l"]) == [
        ("r", "m1", "l"),
        ("r", "m2", "l"),
    ]


@given(
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_marks_expand_into_count_distinct_valid_triplets(s, m, n_less):
    same = [f"s{i}" for i in range(s)]
    more = [f"m{i}" for i in range(m)]
    less = [f"l{i}" for i in range(n_less)]
    expected = triplet_marks.count(s, m, n_less)
    if expected == 0:
        with pytest.raises(InvalidInput, match="no triplet"):
            triplet_marks.expand("r", same, more, less)
        return
    triplets = triplet_marks.expand("r", same, more, less)
    assert len(triplets) == len(set(triplets)) == expected
    rank = {**dict.fromkeys(same + ["r"], 2), **dict.fromkeys(more, 1), **dict.fromkeys(less, 0)}
    for ref, pos, neg in triplets:
        assert len({ref, pos, neg}) == 3
        assert rank[pos] > rank[neg] or (rank[ref] == rank[pos] == 2 and rank[neg] < 2)


def test_bad_marks_are_refused():
    with pytest.raises(InvalidInput, match="more than once"):
        triplet_marks.expand("r", ["a"], ["a"], ["b"])
    with pytest.raises(InvalidInput, match="against itself"):
        triplet_marks.expand("r", [], ["r"], ["b"])
    many = [f"x{i}" for i in range(40)]
    with pytest.raises(InvalidInput, match="smaller groups"):
        triplet_marks.expand("r", many[:20], [], many[20:])


# -- API -----------------------------------------------------------------------------------------
def test_writes_through_the_api_name_their_annotator(client, workspace):
    with Store(workspace.store_path) as s:
        alice = s.add_annotator("alice")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_owner = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/auth/check", headers=as_alice).json() == {"annotator": "alice"}
    box = {"left": 1, "top": 1, "right": 20, "bottom": 20, "version": 0}
    assert client.put("/api/images/p0/box", json=box, headers=as_alice).status_code == 200
    r = client.post(
        "/api/triplets/marks",
        json={"reference": "p1", "same": ["p2"], "more": ["p3"], "less": ["p4", "p5"]},
        headers=as_owner,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["existing"] == 0 and len(body["added"]) == triplet_marks.count(1, 1, 2) == 8
    r = client.post(
        "/api/triplets/marks",
        json={"reference": "p1", "same": [], "more": ["p3"], "less": ["p4"]},
        headers=as_alice,
    )
    assert r.json() == {"added": [], "existing": 1}

    page = client.get("/api/history", params={"limit": 5}).json()
    assert [c["annotator"] for c in page["items"]] == ["owner"] * 5 and page["next"]
    rest = client.get("/api/history", params={"before": page["next"], "limit": 5}).json()
    assert [(c["annotator"], c["action"]) for c in rest["items"]] == [
        *[("owner", "triplet.added")] * 3,
        ("alice", "box.saved"),
    ]
    assert rest["next"] is None
    mine = client.get("/api/history", params={"annotator": "alice"}).json()["items"]
    assert [(c["image"], c["detail"]["box"]) for c in mine] == [("p0", [1, 1, 20, 20])]
    assert len(client.get("/api/history", params={"image": "p2"}).json()["items"]) == 3

    with Store(workspace.store_path) as s:  # a revoked token writes nothing more
        s.remove_annotator("alice")
    box["version"] = 1
    r = client.put("/api/images/p0/box", json=box, headers=as_alice)
    assert r.status_code == 401 and "annotators" in r.json()["error"]["message"]


def test_triplets_are_deleted_in_one_request_all_or_none(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    marks = {"reference": "p1", "same": [], "more": ["p2"], "less": ["p3", "p4"]}
    added = client.post("/api/triplets/marks", json=marks, headers=auth).json()["added"]
    ids = [t["id"] for t in added]
    r = client.post("/api/triplets/delete", json={"ids": [*ids, 99]}, headers=auth)
    assert r.status_code == 404 and "99" in r.json()["error"]["message"]
    assert len(client.get("/api/triplets").json()["triplets"]) == 2  # nothing deleted
    for bad in ({"ids": []}, {"ids": [0]}, {"ids": ["1"]}, {"ids": [True]}, {"id": [1]}):
        assert client.post("/api/triplets/delete", json=bad, headers=auth).status_code == 400
    assert client.post("/api/triplets/delete", json={"ids": ids}).status_code == 401
    r = client.post("/api/triplets/delete", json={"ids": ids}, headers=auth)
    assert r.json() == {"deleted": 2} and client.get("/api/triplets").json()["triplets"] == []
    items = client.get("/api/history", params={"limit": 2}).json()
    assert [c["action"] for c in items["items"]] == ["triplet.deleted"] * 2
    assert items["next"] is not None  # the two additions are older


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"reference": "p1", "same": [], "more": ["p2"], "less": ["p2"]}, 422, "more than once"),
        ({"reference": "p1", "same": ["p2"], "more": [], "less": []}, 422, "no triplet"),
        ({"reference": "p1", "same": [], "more": ["p2"], "less": ["nope"]}, 404, "nope"),
        ({"reference": "p1", "same": "p2", "more": [], "less": []}, 400, "list"),
        ({"reference": "p1", "same": [], "more": [7], "less": []}, 400, "an id in more"),
        ({"reference": "p1", "more": [], "less": []}, 400, "same"),
    ],
)
def test_bad_marks_are_4xx_and_store_nothing(client, body, status, words):
    r = client.post("/api/triplets/marks", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert client.get("/api/history").json() == {"items": [], "next": None}
    assert client.get("/api/triplets").json() == {"triplets": []}


def test_the_server_tokens_annotator_name_is_checked(workspace):
    with pytest.raises(InvalidInput, match="token_annotator"):
        create_app(workspace, token=TOKEN, config=ServerConfig(token_annotator=""))


def test_bad_history_parameters_are_400(client):
    for params in ({"limit": "0"}, {"limit": "501"}, {"before": "x"}, {"image": "a\nb"}):
        r = client.get("/api/history", params=params)
        assert r.status_code == 400, (params, r.text)


# -- CLI -----------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiefjax", *args], capture_output=True, text=True, timeout=120
    )


def test_annotators_and_history_commands(workspace, tmp_path):
    ws = str(workspace.root)
    made = _cli("annotators", ws, "--add", "carol")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    with Store(workspace.store_path) as s:
        assert s.annotator_of(token) == "carol"
        s.put_box("p0", (1, 1, 10, 10), by="carol")
    listed = _cli("annotators", ws, "--json")
    assert json.loads(listed.stdout) == [
        {"name": "carol", "created_at": json.loads(listed.stdout)[0]["created_at"], "changes": 1}
    ]
    shown = _cli("history", ws, "--annotator", "carol")
    assert shown.returncode == 0 and "carol" in shown.stdout and "box.saved" in shown.stdout
    assert "p0" in shown.stdout
    added = json.loads(_cli("annotators", ws, "--add", "dan", "--json").stdout)
    assert added["name"] == "dan" and len(added["token"]) > 20
    (workspace.root / "tiefjax.toml").write_text('[server]\ntoken_annotator = "lead"\n')
    lead = _cli("annotators", ws, "--add", "lead")
    assert lead.returncode == 2 and "token_annotator" in lead.stderr
    bad = _cli("annotators", ws, "--add", "owner")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "another" in bad.stderr
    assert _cli("annotators", ws, "--remove", "carol").returncode == 0
    gone = _cli("annotators", ws, "--remove", "carol")
    assert gone.returncode != 0 and "no annotator 'carol'" in gone.stderr
