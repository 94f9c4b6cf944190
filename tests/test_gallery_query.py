"""Gallery filters, sorts and bulk accept in the store: tiefjax.gallery_query + Store.catalog_page
and Store.accept_detections."""

from __future__ import annotations

import pytest

from tiefjax.errors import Conflict, InvalidInput, NotFound
from tiefjax.gallery_query import SORTS, STATES, CatalogQuery
from tiefjax.store import Detection, ImageRecord, Store
from tiefjax.validate import BadRequest

#: id -> (box or None, detection box or None, probability, fallback)
CATALOG = {
    "a1": ((10, 10, 50, 50), (10, 10, 50, 50), 0.95, False),  # agree: IoU 1
    "a2": ((10, 10, 50, 50), (30, 30, 70, 70), 0.80, False),  # IoU 400 / 2800
    "a3": ((0, 0, 20, 20), None, None, False),  # annotated, never located
    "b1": (None, (5, 5, 60, 60), 0.70, False),  # detected only
    "b2": (None, (0, 0, 40, 30), 0.55, False),
    "c1": (None, (0, 0, 100, 100), 0.20, True),  # fallback: no product found
    "c2": (None, None, None, False),  # nothing
    "Ab": (None, (1, 1, 9, 9), 0.55, False),  # ties b2 on probability
}


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "s.sqlite")
    s.upsert_images(ImageRecord(i, f"{i}.jpg", 100, 100, "h" + i) for i in CATALOG)
    for image_id, (box, *_) in CATALOG.items():
        if box:
            s.put_box(image_id, box)
    s.put_detections(
        Detection(i, det, p, fb) for i, (_, det, p, fb) in CATALOG.items() if det is not None
    )
    yield s
    s.close()


def ids(store: Store, **query) -> list[str]:
    page = store.catalog_page(limit=50, query=CatalogQuery(**query))
    return [item.image.id for item in page.items]


def test_states_partition_the_catalog(store: Store) -> None:
    assert ids(store, state="annotated") == ["a1", "a2", "a3"]
    assert ids(store, state="detected") == ["Ab", "b1", "b2"]
    assert ids(store, state="none") == ["c1", "c2"]  # the fallback is no product box
    assert sorted(ids(store)) == sorted(CATALOG)


def test_id_text_matches_substrings_or_prefixes_ignoring_ascii_case(store: Store) -> None:
    assert ids(store, q="b") == ["Ab", "b1", "b2"]
    assert ids(store, q="B", match="prefix") == ["b1", "b2"]
    assert ids(store, q="%") == [] and ids(store, q="_1") == []  # LIKE wildcards are literal
    assert ids(store, q="1", state="annotated") == ["a1"]


def test_sorts_by_probability_and_by_disagreement(store: Store) -> None:
    assert ids(store, sort="probability") == ["c1", "Ab", "b2", "b1", "a2", "a1"]
    assert ids(store, sort="probability", order="desc") == ["a1", "a2", "b1", "b2", "Ab", "c1"]
    assert ids(store, sort="iou") == ["a2", "a1"]  # only images with both boxes
    assert ids(store, sort="id", order="desc") == sorted(CATALOG, reverse=True)
    page = store.catalog_page(limit=50, query=CatalogQuery(sort="iou"))
    assert page.total == 2


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"order": "desc"},
        {"sort": "probability"},
        {"sort": "probability", "order": "desc", "state": "detected"},
        {"sort": "iou", "order": "desc"},
        {"q": "b", "sort": "probability"},
    ],
)
def test_keyset_pages_walk_the_same_order_as_one_page(store: Store, query: dict) -> None:
    everything = ids(store, **query)
    walked, after = [], ""
    for _ in range(len(CATALOG) + 1):
        page = store.catalog_page(after, limit=2, query=CatalogQuery(**query))
        assert page.total == len(everything)
        walked += [item.image.id for item in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert walked == everything
    offsets = [
        item.image.id
        for o in range(0, len(everything), 3)
        for item in store.catalog_page(offset=o, limit=3, query=CatalogQuery(**query)).items
    ]
    assert offsets == everything


def test_a_cursor_outside_a_sorted_listing_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="not in images with a detection"):
        store.catalog_page("c2", query=CatalogQuery(sort="probability"))
    with pytest.raises(InvalidInput, match="both an annotated and a detected box"):
        store.catalog_page("no-such-id", query=CatalogQuery(sort="iou"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "done"}, "state must be one of all, annotated, detected, none"),
        ({"sort": "score"}, "sort must be one of id, probability, iou"),
        ({"order": "up"}, "order must be one of asc, desc"),
        ({"match": "regex"}, "match must be one of substring, prefix"),
        ({"q": "x" * 201}, "q is longer than 200"),
    ],
)
def test_bad_parameters_name_the_rule(params: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        CatalogQuery.from_params(params)


def test_accept_writes_detections_only_where_there_is_no_box(store: Store) -> None:
    seen = {"b1": 0, "b2": 0, "a2": store.get_box("a2").version, "c1": 0, "c2": 0}
    done = store.accept_detections(seen)
    assert [(b.image_id, b.box.as_tuple(), b.version) for b in done.saved] == [
        ("b1", (5, 5, 60, 60), 1),
        ("b2", (0, 0, 40, 30), 1),
    ]
    assert done.skipped == [("a2", "has_box"), ("c1", "no_product"), ("c2", "no_detection")]
    assert store.get_box("a2").box.as_tuple() == (10, 10, 50, 50)  # never replaced silently
    assert ids(store, state="detected") == ["Ab"]


def test_accept_with_overwrite_replaces_boxes_still_as_seen(store: Store) -> None:
    done = store.accept_detections({"a2": 1, "b1": 0}, overwrite=True)
    assert [b.image_id for b in done.saved] == ["a2", "b1"]
    assert store.get_box("a2").box.as_tuple() == (30, 30, 70, 70)
    assert store.get_box("a2").version == 2


def test_accept_is_all_or_nothing_on_a_conflict_or_unknown_id(store: Store) -> None:
    store.put_box("a1", (1, 1, 20, 20))  # someone else saved after the reviewer loaded v1
    with pytest.raises(Conflict, match="a1 changed since you loaded it"):
        store.accept_detections({"b1": 0, "a1": 1}, overwrite=True)
    with pytest.raises(NotFound):
        store.accept_detections({"b1": 0, "nope": 0})
    assert store.get_box("b1") is None
    assert store.get_box("a1").box.as_tuple() == (1, 1, 20, 20)


def test_a_filtered_sorted_page_is_one_sql_statement(store: Store) -> None:
    after = ids(store, sort="probability")[1]
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    query = CatalogQuery(q="b", state="detected", sort="probability")
    store.catalog_page(after, limit=2, query=query)
    store._db.set_trace_callback(None)
    assert len(statements) == 1, statements


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("q", ["", "1"])
def test_the_count_is_the_listing(store: Store, state: str, sort: str, q: str) -> None:
    """The count reads only the tables its filter needs; it still counts what is listed."""
    page = store.catalog_page(limit=50, query=CatalogQuery(q=q, state=state, sort=sort))
    assert page.total == len(page.items)
