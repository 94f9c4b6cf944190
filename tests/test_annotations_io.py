"""Exporting and importing boxes and triplets as JSON and CSV, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiefjax.annotations_io import export_annotations, import_annotations
from tiefjax.errors import InvalidInput
from tiefjax.store import Box, ImageRecord, Store


def _workspace_store(path: Path, width: int = 100) -> Store:
    store = Store(path)
    store.upsert_images(
        [ImageRecord(i, f"/p/{i}.jpg", width, 80, f"h{i}") for i in ("a", "b", "c", "d")]
    )
    return store


@pytest.fixture
def source(tmp_path: Path):
    with _workspace_store(tmp_path / "src.sqlite") as store:
        store.put_box("a", (1.5, 2, 50, 60))
        store.put_box("c", (0, 0, 100, 80))
        store.add_triplet("a", "b", "c")
        store.add_triplet("d", "c", "a")
        yield store


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_round_trip_between_workspaces(source: Store, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"annotations.{fmt}"
    exported = export_annotations(source, out)
    assert (exported.format, exported.boxes, exported.triplets) == (fmt, 2, 2)
    with _workspace_store(tmp_path / "dst.sqlite") as dest:
        report = import_annotations(dest, out)
        assert (report.boxes_saved, report.triplets_added) == (2, 2)
        assert {k: v.box for k, v in dest.boxes().items()} == {
            k: v.box for k, v in source.boxes().items()
        }
        assert [(t.reference, t.positive, t.negative) for t in dest.list_triplets()] == [
            ("a", "b", "c"),
            ("d", "c", "a"),
        ]
        assert dest.annotations_fingerprint() != ""
        # importing again changes nothing
        again = import_annotations(dest, out)
        assert (again.boxes_saved, again.boxes_unchanged) == (0, 2)
        assert (again.triplets_added, again.triplets_existing) == (0, 2)
        assert dest.get_box("a").version == 1


def test_json_layout(source: Store, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    export_annotations(source, out)
    data = json.loads(out.read_text())
    assert data["boxes"][0] == {"image_id": "a", "left": 1.5, "top": 2, "right": 50, "bottom": 60}
    assert data["triplets"][1] == {"reference": "d", "positive": "c", "negative": "a"}


def test_csv_layout_and_format_option(source: Store, tmp_path: Path) -> None:
    out = tmp_path / "annotations.txt"
    export_annotations(source, out, format="csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "kind,image_id,left,top,right,bottom,reference,positive,negative"
    assert lines[1] == "box,a,1.5,2,50,60,,,"
    assert lines[3] == "triplet,,,,,,a,b,c"
    with pytest.raises(InvalidInput, match="--format"):
        export_annotations(source, tmp_path / "x.txt")


def test_import_csv_from_another_tool(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "image_id,kind,left,top,right,bottom,note\nb,box,1,2,3,4,hello\n\na,BOX, 5 ,6,7,8,\n",
        encoding="utf-8",
    )
    with _workspace_store(tmp_path / "s.sqlite") as store:
        report = import_annotations(store, path)
        assert report.boxes_saved == 2
        assert store.get_box("a").box == Box(5, 6, 7, 8)


def test_bad_csv_rows_are_all_reported_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "kind,image_id,left,top,right,bottom,reference,positive,negative\n"
        "box,a,1,1,10,10,,,\n"  # fine
        "box,a,1,1,500,10,,,\n"  # outside 100x80 (and a second box for a)
        "box,zz,1,1,2,2,,,\n"  # unknown image
        "triplet,,,,,,a,a,b\n"  # not distinct
        "triplet,,,,,,a,b,nope\n"  # unknown image
        "box,b,x,1,2,3,,,\n"  # not a number
        "circle,b,,,,,,,\n"  # unknown kind
        "triplet,,,,,,b,c,d\n",  # fine
        encoding="utf-8",
    )
    with _workspace_store(tmp_path / "s.sqlite") as store:
        before = store.annotations_fingerprint()
        with pytest.raises(InvalidInput) as info:
            import_annotations(store, path)
        message = str(info.value)
        assert "nothing was imported" in message
        for expected in (
            "line 3: box (1, 1, 500, 10) is invalid for image a (100x80): right must be <=",
            "line 3: a second box for a (the first is at line 2)",
            "line 4: no image with id 'zz'",
            "line 5: triplet (a, a, b) needs three different images",
            "line 6: triplet (a, b, nope): no image with id 'nope'",
            "line 7: left must be a number, got 'x'",
            "line 8: kind must be box or triplet",
        ):
            assert expected in message
        assert message.index("line 3") < message.index("line 8")  # in file order
        assert "line 2:" not in message and "line 9" not in message
        assert store.annotations_fingerprint() == before
        assert store.stats()["boxes"] == 0 and store.stats()["triplets"] == 0


def test_bad_json_rows_rejected_atomically(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "boxes": [
                    {"image_id": "a", "left": 1, "top": 1, "right": 5, "bottom": 5},
                    {"image_id": "b", "left": 1, "top": 1, "right": "5", "bottom": 5},
                    {"image_id": "c", "left": 1, "top": 1, "right": 500, "bottom": 5},
                    "not an object",
                ],
                "triplets": [{"reference": "a", "positive": "b"}],
            }
        )
    )
    with _workspace_store(tmp_path / "s.sqlite") as store:
        with pytest.raises(InvalidInput) as info:
            import_annotations(store, path)
        message = str(info.value)
        assert "boxes[1]: right must be a number" in message
        assert "boxes[2]: box (1, 1, 500, 5) is invalid for image c" in message
        assert "boxes[3]: expected an object" in message
        assert "triplets[0]: negative None is not an image id" in message
        assert store.stats()["boxes"] == 0


def test_wider_catalog_boxes_do_not_fit_a_narrower_one(source: Store, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    export_annotations(source, out)
    with _workspace_store(tmp_path / "narrow.sqlite", width=60) as dest:
        with pytest.raises(InvalidInput, match=r"boxes\[1\]: .*image c \(60x80\)"):
            import_annotations(dest, out)
        assert dest.stats()["boxes"] == 0 and dest.stats()["triplets"] == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", "{not json", "not valid JSON at line 1"),
        ("x.json", "[1, 2]", 'expected a JSON object with "boxes"'),
        ("x.csv", "image_id,left\na,1\n", "kind column"),
        ("x.json", '{"boxes": [{"left": 1' + "0" * 400 + "}]}", "integer '1000.* out of range"),
        ("x.json", '{"boxes": [{"left": 1' + "0" * 5000 + "}]}", "integer '1000.* out of range"),
        ("x.json", '{"boxes": [{"left": 1e999}]}', "too large to be a finite number"),
        ("x.json", '{"boxes": ' + "[" * 100_000 + "]" * 100_000 + "}", "more than 32 deep"),
        ("x.json", '{"triplets": [{"reference": "\\udc80"}]}', "not valid Unicode"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with _workspace_store(tmp_path / "s.sqlite") as store:
        with pytest.raises(InvalidInput, match=message) as info:
            import_annotations(store, path)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400  # one line
        with pytest.raises(InvalidInput, match="file not found"):
            import_annotations(store, tmp_path / "missing.json")


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path: Path) -> None:
    """Ids like =HYPERLINK(...) are written as text ('=...) and come back unchanged."""
    ids = ['=HYPERLINK("http://evil")', "+1", "-dress", "@SUM(A1)", "'quoted", "plain"]
    with Store(tmp_path / "src.sqlite") as source:
        source.upsert_images(
            [ImageRecord(i, f"/p/{n}.jpg", 100, 80, f"h{n}") for n, i in enumerate(ids)]
        )
        for image_id in ids:
            source.put_box(image_id, (1, 2, 30, 40))
        source.add_triplet(ids[0], ids[1], ids[2])
        out = tmp_path / "a.csv"
        export_annotations(source, out)
    cells = [cell for line in out.read_text().splitlines()[1:] for cell in line.split(",")]
    assert not any(cell.lstrip('"').startswith(("=", "+", "-", "@")) for cell in cells), cells
    assert "'-dress" in cells and "''quoted" in cells and "plain" in cells
    with Store(tmp_path / "dst.sqlite") as dest:
        dest.upsert_images(
            [ImageRecord(i, f"/p/{n}.jpg", 100, 80, f"h{n}") for n, i in enumerate(ids)]
        )
        report = import_annotations(dest, out)
        assert (report.boxes_saved, report.triplets_added) == (len(ids), 1)
        assert sorted(dest.boxes()) == sorted(ids)
        assert [(t.reference, t.positive, t.negative) for t in dest.list_triplets()] == [
            tuple(ids[:3])
        ]
