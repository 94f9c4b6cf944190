"""RowTable: a build's rows as memory-mapped NumPy columns; an older rows.json converted once."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

import tiefjax.index.row_table as row_table
from tiefjax.index.encode import Row
from tiefjax.index.row_table import RowTable

ROWS = [
    Row("a", "1" * 64, (0.0, 0.0, 10.0, 20.0), "whole", None, True),
    Row("b\u00e9 odd/id", "2" * 64, (1.5, 2.25, 3.0, 4.0), "detection", 0.875),
    Row("c", "1" * 64, (0.0, 1.0, 2.0, 3.0), "annotation"),  # same photo as "a"
]


def _build(tmp_path, rows=ROWS):
    build = tmp_path / "index-1"
    build.mkdir()
    (build / "rows.json").write_text(json.dumps([r.to_json() for r in rows]))
    return build


def test_open_writes_the_columns_once_then_memory_maps_them(tmp_path):
    build = _build(tmp_path)
    table = RowTable.open(build)
    assert (build / "rows" / "done").is_file() and not list(build.glob(".rows*"))
    # plain views of the mapped files (np.memmap's own indexing is slow per item)
    assert all(isinstance(table.c[k].base, np.memmap) for k in ("id_blob", "box", "id_hash"))
    assert [table.row(p) for p in range(len(table))] == ROWS
    assert table.ids == ("a", "b\u00e9 odd/id", "c") and table.ids[-1] == "c"
    assert table.ids[1:] == ["b\u00e9 odd/id", "c"] and list(table.ids) == [r.id for r in ROWS]
    assert table.ids_at(np.array([2, 0, 1, 0])) == ["c", "a", "b\u00e9 odd/id", "a"]  # hits' order
    assert "c" in table.ids and "d" not in table.ids and 3 not in table.ids
    assert [table.position(i) for i in ("a", "b\u00e9 odd/id", "c", "x", None)] == [
        0, 1, 2, None, None,
    ]  # fmt: skip
    # two rows of one photo: the last one, as the dict it replaces answered
    assert table.by_sha("1" * 64) == 2 and table.by_sha("2" * 64) == 1
    assert table.by_sha("0" * 64) is None and table.by_sha("9" * 64) is None
    (build / "rows.json").write_text("[]")  # read from rows/ from now on, not from the JSON
    assert RowTable.open(build).row(1) == ROWS[1]


def test_a_read_only_build_is_read_into_memory(tmp_path, monkeypatch):
    build = _build(tmp_path)

    def refuse(self, folder):
        raise PermissionError("read-only")

    monkeypatch.setattr(RowTable, "save", refuse)
    table = RowTable.open(build)
    assert not (build / "rows").exists() and table.row(2) == ROWS[2]


def test_ids_sharing_a_hash_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(row_table, "_id_hash", lambda image_id: 7)
    table = RowTable.open(_build(tmp_path))
    assert [table.position(i) for i in ("c", "a", "b\u00e9 odd/id", "zz")] == [2, 0, 1, None]


def test_an_empty_build(tmp_path):
    table = RowTable.open(_build(tmp_path, []))
    assert len(table) == 0 and table.ids == () and table.position("a") is None
    assert table.ids_at(np.array([], np.int64)) == []
    assert table.by_sha("1" * 64) is None
    with pytest.raises(IndexError):
        table.ids[0]


def test_a_build_replaces_the_rows_of_a_killed_attempt(tmp_path):
    folder = tmp_path / "rows"
    RowTable.from_rows(ROWS).save(folder)
    RowTable.from_rows(ROWS[:1]).save(folder)  # another process's complete copy is kept
    assert len(RowTable.open(tmp_path)) == 3
    RowTable.from_rows(ROWS[:1]).save(folder, replace=True)
    assert len(RowTable.open(tmp_path)) == 1 and not list(tmp_path.glob(".rows*"))


def test_rows_written_before_hits_were_pre_rendered_get_them(tmp_path, monkeypatch):
    build = _build(tmp_path)
    RowTable.open(build)
    folder = build / "rows"
    expected = RowTable.open(build).hits_at(np.arange(3))
    assert orjson.loads(b"{%b}" % expected[1]) == {
        "id": "b\u00e9 odd/id",
        "box": {"left": 1.5, "top": 2.25, "right": 3.0, "bottom": 4.0},
        "box_source": "detection",
    }
    for name in ("hit_end.npy", "hit_blob.npy"):
        (folder / name).unlink()
    reader = RowTable.open(build, hits=False)  # a build re-using rows: nothing rendered, written
    assert reader.row(1) == ROWS[1] and "hit_blob" not in reader.c
    assert not (folder / "hit_end.npy").exists()
    refused = []

    def refuse(src, dst):  # a read-only build: rendered in memory, nothing written
        refused.append(dst)
        raise PermissionError("read-only")

    monkeypatch.setattr(row_table.os, "replace", refuse)
    assert RowTable.open(build).hits_at(np.arange(3)) == expected
    assert refused and not (folder / "hit_blob.npy").exists() and not list(folder.glob(".hit*"))
    monkeypatch.undo()
    assert RowTable.open(build).hits_at(np.array([2, 0])) == [expected[2], expected[0]]
    assert (folder / "hit_blob.npy").is_file() and not list(folder.glob(".hit*"))


def test_a_table_opened_from_files_is_saved_as_a_copy_of_them(tmp_path):
    build = _build(tmp_path)
    table = RowTable.open(build)
    assert table.folder == build / "rows"
    (tmp_path / "copy").mkdir()
    (tmp_path / "unserved").mkdir()
    table.save(tmp_path / "copy" / "rows")
    copied = RowTable.open(tmp_path / "copy")
    assert [copied.row(p) for p in range(3)] == ROWS
    assert copied.hits_at(np.arange(3)) == table.hits_at(np.arange(3))
    for name in ("box.npy", "hit_blob.npy", "id_hash.npy"):
        assert (tmp_path / "copy" / "rows" / name).read_bytes() == (
            build / "rows" / name
        ).read_bytes()
    assert RowTable.from_rows(ROWS).folder is None
    RowTable.from_rows(ROWS, hits=False).save(tmp_path / "unserved" / "rows")  # ranking's rows
    assert not (tmp_path / "unserved" / "rows" / "hit_blob.npy").exists()
    assert RowTable.open(tmp_path / "unserved").hits_at(np.arange(3)) == table.hits_at(np.arange(3))
