"""The SQLite annotation store: validation, versioned boxes, concurrency, migrations, crashes."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tiefjax.errors import Conflict, InvalidInput, NotFound, TiefjaxError
from tiefjax.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Box,
    BoxConflict,
    Detection,
    ImageRecord,
    Store,
    StoreBusy,
    StoreDamaged,
    apply_migration,
)

REPO = Path(__file__).resolve().parents[1]


def _rec(image_id: str, width: int = 100, height: int = 80, sha: str = "h") -> ImageRecord:
    return ImageRecord(image_id, f"/photos/{image_id}.jpg", width, height, f"{sha}-{image_id}")


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "s.sqlite") as s:
        s.upsert_images([_rec("a"), _rec("b"), _rec("c"), _rec("d")])
        yield s


def test_new_store_is_wal_with_latest_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.stats() == {"images": 0, "boxes": 0, "triplets": 0, "detections": 0}
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_images_crud_and_paging(store: Store) -> None:
    assert store.image_ids() == ["a", "b", "c", "d"]
    assert [i.image.id for i in store.catalog_page(offset=1, limit=2).items] == ["b", "c"]
    assert store.count_images() == 4
    assert store.get_image("a") == _rec("a")
    with pytest.raises(NotFound, match="'zz'"):
        store.get_image("zz")
    assert store.remove_images(["d", "nope"]) == 1
    assert store.image_ids() == ["a", "b", "c"]
    with pytest.raises(InvalidInput, match="width"):
        store.upsert_image(ImageRecord("x", "/x.jpg", 0, 10, "h"))


def test_meta(store: Store) -> None:
    assert store.get_meta("images_dir") is None
    store.set_meta("images_dir", "/photos")
    assert store.get_meta("images_dir") == "/photos"
    store.set_meta("images_dir", None)
    assert store.get_meta("images_dir", "dflt") == "dflt"


def test_box_versions_and_stale_edit_conflict(store: Store) -> None:
    assert store.get_box("a") is None
    first = store.put_box("a", (10, 10, 50, 60), expected_version=0)
    assert first.version == 1 and first.box == Box(10.0, 10.0, 50.0, 60.0)
    # two editors loaded version 1; the first saves, the second gets a conflict
    newer = store.put_box("a", Box(11, 10, 50, 60), expected_version=1)
    assert newer.version == 2
    with pytest.raises(Conflict, match="version 2") as info:
        store.put_box("a", Box(20, 20, 40, 40), expected_version=1)
    assert isinstance(info.value, BoxConflict) and info.value.current == newer
    assert info.value.http_status == 409
    assert store.get_box("a") == newer  # the newer box is kept
    with pytest.raises(Conflict, match="already has a box"):
        store.put_box("a", Box(20, 20, 40, 40), expected_version=0)
    # saving the same box keeps its version; None overwrites unconditionally
    assert store.put_box("a", Box(11, 10, 50, 60), expected_version=2).version == 2
    assert store.put_box("a", Box(1, 1, 2, 2)).version == 3


def test_delete_box_keeps_counting_versions(store: Store) -> None:
    store.put_box("a", (10, 10, 50, 60), 0)
    with pytest.raises(Conflict):
        store.delete_box("a", expected_version=5)
    store.delete_box("a", expected_version=1)
    assert store.get_box("a") is None and "a" not in store.boxes()
    # an editor still holding version 1 cannot resurrect it
    with pytest.raises(Conflict, match="deleted") as info:
        store.put_box("a", (1, 1, 5, 5), expected_version=1)
    assert info.value.current is None
    again = store.put_box("a", (1, 1, 5, 5), expected_version=0)
    assert again.version == 3  # not 1: a stale "version 1" can never match the redrawn box
    store.delete_box("b")  # no box: nothing to do
    with pytest.raises(NotFound):
        store.delete_box("zz")


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((-1, 0, 10, 10), "left and top must be >= 0"),
        ((0, -0.5, 10, 10), "left and top must be >= 0"),
        ((0, 0, 101, 10), "right must be <= the image width 100"),
        ((0, 0, 10, 80.5), "bottom must be <= the image height 80"),
        ((10, 0, 10, 10), "left must be less than right"),
        ((0, 20, 10, 5), "top must be less than bottom"),
        ((0, 0, math.nan, 10), "finite"),
        ((0, 0, math.inf, 10), "finite"),
        ((0, 0, "10", 10), "must be a number"),
        ((0, 0, True, 10), "must be a number"),
        ((0, 0, 10**400, 10), "right is too large"),  # float() would overflow
        ((0, 0, 10), "4 numbers"),
    ],
)
def test_invalid_boxes_rejected_with_reason(store: Store, box, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        store.put_box("a", box, expected_version=None)
    assert "image a (100x80)" in str(info.value) or "4 numbers" in reason
    assert store.get_box("a") is None


@pytest.mark.parametrize("bad", ["", "a\nb", "a\x00", "\ud800", 5])
def test_unusable_image_ids_are_refused(store: Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="cannot be an image id"):
        store.upsert_image(ImageRecord(bad, "/p/x.jpg", 10, 10, "h"))  # type: ignore[arg-type]
    assert store.count_images() == 4


def test_box_on_the_border_is_valid(store: Store) -> None:
    assert store.put_box("a", (0, 0, 100, 80)).box == Box(0, 0, 100, 80)


def test_box_for_unknown_image(store: Store) -> None:
    with pytest.raises(NotFound, match="'zz'"):
        store.put_box("zz", (0, 0, 1, 1))
    with pytest.raises(NotFound):
        store.get_box("zz")


def test_triplets(store: Store) -> None:
    t = store.add_triplet("a", "b", "c")
    assert (t.reference, t.positive, t.negative) == ("a", "b", "c")
    assert store.add_triplet("a", "b", "c") == t  # duplicates are idempotent
    t2 = store.add_triplet("b", "a", "c")
    assert store.count_triplets() == 2
    assert store.list_triplets() == [t, t2]
    assert store.list_triplets(reference="b") == [t2]
    with pytest.raises(InvalidInput, match="three different images"):
        store.add_triplet("a", "a", "c")
    with pytest.raises(InvalidInput, match="three different images"):
        store.add_triplet("a", "b", "b")
    with pytest.raises(NotFound, match="'zz'"):
        store.add_triplet("a", "zz", "c")
    with pytest.raises(InvalidInput, match="non-empty"):
        store.add_triplet("a", "", "c")
    store.delete_triplet(t.id)
    assert store.list_triplets() == [t2]
    with pytest.raises(NotFound):
        store.delete_triplet(t.id)


def test_removing_an_image_removes_its_annotations(store: Store) -> None:
    store.put_box("a", (1, 1, 5, 5))
    store.put_box("b", (1, 1, 5, 5))
    store.add_triplet("a", "b", "c")
    store.add_triplet("b", "c", "d")
    store.put_detections([Detection("a", Box(0, 0, 9, 9), 0.8, False)])
    store.remove_images(["a"])
    assert store.stats() == {"images": 3, "boxes": 1, "triplets": 1, "detections": 0}


def test_resized_image_keeps_fitting_box_and_drops_others(store: Store) -> None:
    store.put_box("a", (10, 10, 90, 70))
    store.put_box("b", (10, 10, 40, 40))
    store.put_detections([Detection("b", Box(0, 0, 10, 10), 0.5, False)])
    store.upsert_images([_rec("a", 50, 50, "new"), _rec("b", 50, 50, "new")])
    assert store.get_box("a") is None  # no longer inside 50x50
    assert store.get_box("b").box == Box(10, 10, 40, 40)
    assert store.get_detection("b") is None  # the photo changed: its detection is stale


def test_detections(store: Store) -> None:
    store.put_detections(
        [
            Detection("a", Box(-3, 2, 120, 50), 0.9, False),
            Detection("b", Box(0, 0, 100, 80), 0.1, True),
        ]
    )
    assert store.get_detection("a") == Detection("a", Box(0, 2, 100, 50), 0.9, False)
    assert store.get_detection("c") is None
    assert set(store.detections()) == {"a", "b"}
    store.put_detections([Detection("c", Box(1, 1, 2, 2), 0.7, False)], replace=True)
    assert set(store.detections()) == {"c"}
    with pytest.raises(NotFound):
        store.put_detections([Detection("zz", Box(1, 1, 2, 2), 0.7, False)])


def test_fingerprint_follows_annotations(store: Store, tmp_path: Path) -> None:
    f0 = store.annotations_fingerprint()
    assert store.annotations_fingerprint() == f0
    store.put_box("a", (1, 1, 5, 5))
    f1 = store.annotations_fingerprint()
    store.put_detections([Detection("a", Box(0, 0, 9, 9), 0.8, False)])
    assert store.annotations_fingerprint() == f1  # detections are not annotations
    store.add_triplet("a", "b", "c")
    f2 = store.annotations_fingerprint()
    store.upsert_image(_rec("e"))
    f3 = store.annotations_fingerprint()
    assert len({f0, f1, f2, f3}) == 4
    # the same content elsewhere has the same fingerprint
    with Store(tmp_path / "other.sqlite") as other:
        other.upsert_images([_rec(i) for i in "abcde"])
        other.add_triplet("a", "b", "c")
        other.put_box("a", (1, 1, 5, 5))
        assert other.annotations_fingerprint() == f3


def test_failed_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(InvalidInput):
        with store.transaction():
            store.put_box("a", (1, 1, 5, 5))
            store.add_triplet("a", "b", "c")
            store.put_box("b", (1, 1, 500, 5))
    assert store.stats()["boxes"] == 0 and store.stats()["triplets"] == 0


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreDamaged, match="is damaged .* nothing was changed"):
        Store(path)


# -- migrations -----------------------------------------------------------------------------------
def test_migrates_an_older_schema_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    apply_migration(db, MIGRATIONS[0])
    db.execute("INSERT INTO images VALUES ('a', '/a.jpg', 10, 10, 'h')")
    db.execute("INSERT INTO images VALUES ('b', '/b.jpg', 10, 10, 'h')")
    db.execute("INSERT INTO images VALUES ('c', '/c.jpg', 10, 10, 'h')")
    db.execute("INSERT INTO boxes VALUES ('a', 1, 1, 5, 5, 4, '2020-01-01T00:00:00Z')")
    db.execute("INSERT INTO triplets VALUES (1, 'a', 'b', 'c', '2020-01-01T00:00:00Z')")
    db.execute("COMMIT")
    db.close()
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.get_box("a").version == 4
        assert s.count_triplets() == 1
        s.put_detections([Detection("a", Box(0, 0, 5, 5), 0.5, False)])  # table added by v2
        assert s.get_detection("a") is not None
    with Store(path) as s:  # reopening is a no-op
        assert s.schema_version() == SCHEMA_VERSION


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(TiefjaxError, match="upgrade tiefjax"):
        Store(path)


# -- concurrency ----------------------------------------------------------------------------------
def _bump(store: Store, image_id: str, times: int, start: threading.Barrier) -> int:
    """Read-modify-write the box ``times`` times, retrying on conflicts; returns conflicts seen.

    Each writer reads the box, then waits at ``start`` for the others: they all hold the same
    version, so all but one of their first writes must conflict.
    """
    current = store.get_box(image_id)
    start.wait(timeout=60)
    conflicts = done = 0
    while done < times:
        try:
            store.put_box(
                image_id, (0, 0, current.box.right + 1, 1), expected_version=current.version
            )
            done += 1
        except Conflict:
            conflicts += 1
        current = store.get_box(image_id)
    return conflicts


def _setup_counter(path: Path) -> None:
    with Store(path) as s:
        s.upsert_image(ImageRecord("x", "/x.jpg", 1_000_000, 10, "h"))
        s.put_box("x", (0, 0, 1, 1), expected_version=0)


def _assert_counted(path: Path, writers: int, times: int, conflicts: list[int]) -> None:
    """No lost update, and the writers really contended."""
    with Store(path) as s:
        final = s.get_box("x")
    assert final.version == 1 + writers * times
    assert final.box.right == 1 + writers * times
    assert sum(conflicts) >= writers - 1, conflicts


def test_concurrent_writers_on_two_connections_threads(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _setup_counter(path)
    times = 40
    start = threading.Barrier(2)
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Store(path) as own:
                conflicts.append(_bump(own, "x", times, start))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_counted(path, 2, times, conflicts)


def test_one_store_shared_by_threads(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _setup_counter(path)
    start = threading.Barrier(3)
    conflicts: list[int] = []
    with Store(path) as shared:

        def worker() -> None:
            conflicts.append(_bump(shared, "x", 25, start))

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    _assert_counted(path, 3, 25, conflicts)


def _bump_in_process(
    path: str, times: int, start: threading.Barrier, results: multiprocessing.Queue
) -> None:
    try:
        with Store(path) as s:
            results.put(_bump(s, "x", times, start))
    except BaseException as err:  # reported to the test
        results.put(repr(err))


def test_concurrent_writers_in_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _setup_counter(path)
    times = 30
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_bump_in_process, args=(str(path), times, start, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    conflicts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(isinstance(n, int) for n in conflicts), conflicts
    _assert_counted(path, 2, times, conflicts)


_CRASHER = textwrap.dedent(
    """
    import sys, time
    from tiefjax.store import Box, ImageRecord, Store
    n = int(sys.argv[2])
    s = Store(sys.argv[1])
    for i in range(n):  # N committed transactions
        s.upsert_image(ImageRecord(f"img{i:03d}", f"/p/{i}.jpg", 50, 50, "h"))
        s.put_box(f"img{i:03d}", Box(1, 1, 20, 20), expected_version=0)
    s._db.execute("PRAGMA cache_size = 4")  # spill uncommitted pages into the WAL file
    with s.transaction():  # a long transaction that never commits
        for i in range(n, n + 3000):
            s.upsert_image(ImageRecord(f"img{i:03d}", f"/p/{i}.jpg", 50, 50, "h"))
        s.put_box("img000", Box(2, 2, 30, 30), expected_version=1)
        s.remove_images(["img001"])
        print("in-transaction", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_mid_transaction_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    n = 25
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(path), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "in-transaction", proc.stderr.read()
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > 100_000  # uncommitted pages really reached the disk
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with Store(path) as s:
        assert s.count_images() == n  # committed rows all there, uncommitted ones not
        assert s.get_box("img000").box == Box(1, 1, 20, 20)
        assert s.get_box("img001") is not None
        assert len(s.boxes()) == n
        s.put_box("img002", Box(3, 3, 9, 9), expected_version=1)  # writable again
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_readers_are_not_blocked_and_busy_writers_get_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _setup_counter(path)
    with Store(path) as writer, Store(path, timeout=0.2) as other:
        with writer.transaction():
            writer.put_box("x", (0, 0, 5, 5))
            assert other.get_box("x").version == 1  # WAL: reads the last committed state
            with pytest.raises(StoreBusy, match="locked by another writer") as info:
                other.put_box("x", (0, 0, 7, 7))
            assert info.value.http_status == 503
        assert other.get_box("x").version == 2


def test_boxes_from_mappings_and_paging_arguments(store: Store) -> None:
    saved = store.put_box("a", {"left": 1, "top": 2, "right": 3, "bottom": 4})
    assert saved.box == Box(1, 2, 3, 4)
    with pytest.raises(InvalidInput, match="bottom"):
        store.put_box("a", {"left": 1, "top": 2, "right": 3})
    with pytest.raises(InvalidInput, match=">= 0"):
        store.catalog_page(offset=-1)
    with pytest.raises(InvalidInput, match=">= 1"):
        store.catalog_page(limit=0)


# -- gallery pages --------------------------------------------------------------------------------
#: Images in the deep-catalog tests: pages 40 and beyond of the site's 48.
DEEP = 2000


@pytest.fixture()
def deep_store(tmp_path: Path):
    """2,000 images; every 7th with a box (one of them deleted again), every 5th located."""
    with Store(tmp_path / "deep.sqlite") as s:
        ids = [f"img{n:05d}" for n in range(DEEP)]
        s.upsert_images(_rec(i) for i in ids)
        with s.transaction():
            for i in ids[::7]:
                s.put_box(i, (1, 2, 30, 40))
            s.delete_box(ids[14])
        s.put_detections(Detection(i, (5, 5, 50, 50), 0.5, False) for i in ids[::5])
        yield s


def _by_cursor(store: Store, limit: int) -> list[list[str]]:
    """Every page, each asked for with the previous page's ``next_after``."""
    pages, after = [], ""
    while True:
        page = store.catalog_page(after, limit=limit)
        pages.append([item.image.id for item in page.items])
        if page.next_after is None:
            return pages
        after = page.next_after


def test_keyset_pages_equal_offset_pages(deep_store: Store) -> None:
    ids = deep_store.image_ids()
    by_cursor = _by_cursor(deep_store, 48)
    by_offset = [
        [item.image.id for item in deep_store.catalog_page(offset=o, limit=48).items]
        for o in range(0, DEEP, 48)
    ]
    assert by_cursor == by_offset == [ids[o : o + 48] for o in range(0, DEEP, 48)]
    assert _by_cursor(deep_store, DEEP) == [ids]  # exactly one full page: no empty one after it


def test_a_deep_page_holds_the_right_images_boxes_and_detections(deep_store: Store) -> None:
    ids, boxes, detections = deep_store.image_ids(), deep_store.boxes(), deep_store.detections()
    last = deep_store.catalog_page(ids[DEEP - 33], limit=48)  # the last 32 images
    assert (last.total, last.next_after) == (DEEP, None)
    assert [item.image for item in last.items] == deep_store.list_images()[-32:]
    for item in last.items:
        assert item.box == boxes.get(item.image.id)
        assert item.detection == detections.get(item.image.id)
    assert sum(item.box is not None for item in last.items) == 4
    assert sum(item.detection is not None for item in last.items) == 6
    middle = deep_store.catalog_page(ids[999], offset=1, limit=3)  # after + offset compose
    assert [i.image.id for i in middle.items] == ids[1001:1004]
    assert middle.next_after == ids[1003]
    between = deep_store.catalog_page(ids[9] + "~", limit=1)  # a cursor that is no stored id
    assert between.items[0].image.id == ids[10]
    empty = deep_store.catalog_page(ids[-1])
    assert (empty.total, empty.items, empty.next_after) == (DEEP, [], None)
    assert deep_store.catalog_item(ids[0]) == deep_store.catalog_page(limit=1).items[0]
    assert deep_store.catalog_item(ids[14]).box is None  # deleted: the tombstone is no box
    with pytest.raises(NotFound, match="'nope'"):
        deep_store.catalog_item("nope")


@pytest.mark.parametrize("limit", [1, 48, 500])
def test_a_page_is_one_sql_statement_whatever_its_size(deep_store: Store, limit: int) -> None:
    after = deep_store.image_ids()[1000]
    statements: list[str] = []
    deep_store._db.set_trace_callback(statements.append)
    try:
        page = deep_store.catalog_page(after, limit=limit)
    finally:
        deep_store._db.set_trace_callback(None)
    assert len(page.items) == min(limit, DEEP - 1001)
    assert len(statements) == 1, statements
