"""Batch scoring: JSONL per photo, resumable, per-file errors, folders and globs."""

from __future__ import annotations

import json

import pytest
from _index_fakes import FakeEncoder, make_workspace, photo
from PIL import Image

from tiefjax.errors import InvalidInput
from tiefjax.images import content_box
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.score import done_ids, input_files, score
from tiefjax.search import Searcher

CFG = IndexConfig.tiny()


@pytest.fixture()
def setup(tmp_path):
    ws, images = make_workspace(tmp_path, 6)
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    new = tmp_path / "new"
    new.mkdir()
    for i in range(5):
        photo(100 + i).save(new / f"n{i}.jpg")
    (new / "broken.jpg").write_bytes(b"\xff\xd8\xff junk")
    (new / "notes.txt").write_text("not an image")
    searcher = Searcher.load(ws, CFG, encoder=FakeEncoder())
    return ws, new, searcher


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_folder_with_errors(setup, tmp_path):
    ws, new, searcher = setup
    out = tmp_path / "out" / "results.jsonl"
    report = score(ws, new, out, k=3, searcher=searcher, progress=False)
    assert (report.scored, report.errors, report.skipped) == (5, 1, 0)
    lines = {r["id"]: r for r in _lines(out)}
    assert set(lines) == {"n0", "n1", "n2", "n3", "n4", "broken"}
    assert "not a readable image" in lines["broken"]["error"]
    first = lines["n0"]
    with Image.open(new / "n0.jpg") as img:  # the whole photo, its plain borders trimmed
        trimmed = content_box(img.convert("RGB"))
    assert first["box"] == pytest.approx(list(trimmed), abs=0.01)
    assert first["box_source"] == "whole"
    assert first["probability"] is None and first["fallback"] is True
    assert len(first["unsupervised"]) == 3
    assert "supervised" not in first
    assert first["unsupervised"] == [
        {"id": h.id, "score": pytest.approx(h.score, abs=1e-5)}
        for h in searcher.search(new / "n0.jpg", k=3).hits
    ]


def test_resume_skips_done_and_tolerates_a_partial_line(setup, tmp_path):
    ws, new, searcher = setup
    out = tmp_path / "r.jsonl"
    score(ws, str(new / "n[01].jpg"), out, k=2, searcher=searcher, progress=False)  # a glob
    assert [r["id"] for r in _lines(out)] == ["n0", "n1"]
    with open(out, "a") as fh:
        fh.write('{"id": "n2", "file": "x", "box": [0, ')  # killed mid-write
    assert done_ids(out) == {"n0", "n1"}
    assert out.read_text().endswith("}\n")  # the partial line was cut off
    report = score(ws, new, out, k=2, searcher=searcher, progress=False)
    assert (report.scored, report.errors, report.skipped) == (3, 1, 2)
    ids = [r["id"] for r in _lines(out)]
    assert sorted(ids) == ["broken", "n0", "n1", "n2", "n3", "n4"] and len(ids) == 6
    again = score(ws, new, out, k=2, searcher=searcher, progress=False)
    assert (again.scored, again.skipped) == (0, 6)


def test_inputs_and_modes(setup, tmp_path):
    ws, new, searcher = setup
    assert [p.name for p in input_files(new / "n3.jpg")] == ["n3.jpg"]
    assert len(input_files(str(new / "*.jpg"))) == 6
    with pytest.raises(InvalidInput):
        input_files(tmp_path / "nothing-here")
    with pytest.raises(InvalidInput, match="no photos found"):
        input_files(str(new / "*.png"))  # a pattern matching nothing is not a silent no-op
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no photos found"):
        input_files(tmp_path / "empty")
    with pytest.raises(InvalidInput, match="mode"):
        score(ws, new, tmp_path / "x.jsonl", modes=("bogus",), searcher=searcher)


def test_cli_score(setup, tmp_path, capsys, monkeypatch):
    from tiefjax.cli import main

    ws, new, searcher = setup
    monkeypatch.setattr("tiefjax.search.Searcher.load", classmethod(lambda cls, w: searcher))
    out = tmp_path / "cli.jsonl"
    assert main(["score", str(ws.root), str(new), "--out", str(out), "-k", "2"]) == 0
    assert "scored 5 photo(s)" in capsys.readouterr().out
    assert len(_lines(out)) == 6


def test_a_copy_of_a_catalog_photo_names_its_source(setup, tmp_path):
    ws, new, searcher = setup
    copies = tmp_path / "copies"
    copies.mkdir()
    with Image.open(ws.root.parent / "images" / "p003.jpg") as img:
        img.convert("RGB").resize((150, 112), Image.Resampling.BICUBIC).save(copies / "c.jpg")
    photo(200).save(copies / "other.jpg")
    out = tmp_path / "copies.jsonl"
    score(ws, copies, out, k=3, searcher=searcher, progress=False)
    lines = {r["id"]: r for r in _lines(out)}
    assert lines["c"]["copy_of"] == "p003" and lines["c"]["unsupervised"][0]["id"] == "p003"
    assert lines["c"]["copy_score"] >= CFG.copy_threshold
    assert "copy_of" not in lines["other"]
