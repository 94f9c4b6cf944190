"""Resumable index builds: a killed build resumes from its last finished chunk, encoding only
what was not finished, and gives what an uninterrupted build gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _index_fakes import FakeEncoder, FakeLocator, kill_when_marked, make_workspace

from tiefjax.index.build import build_index, current_build
from tiefjax.index.config import IndexConfig
from tiefjax.index.row_table import RowTable
from tiefjax.store import Store

CFG = IndexConfig.tiny().with_(chunk_size=4)  # 12 photos: 3 chunks of 4 (one encoder batch)
LOCATOR = (FakeLocator(), "loc-1")

KILLED_SCRIPT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from _index_fakes import FakeEncoder, FakeLocator
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.workspace import Workspace

ws = Workspace(sys.argv[1])

class StallsAfterTwoChunks(FakeEncoder):
    def start(self, windows):
        if len(list(ws.index_dir.glob(".tmp-*/chunks/*.json"))) >= 2:
            Path(sys.argv[3]).write_text("two chunks written")
            time.sleep(120)  # killed here, in the third chunk
        return super().start(windows)

cfg = IndexConfig.tiny().with_(chunk_size=4)
build_index(ws, cfg, encoder=StallsAfterTwoChunks(), locator=(FakeLocator(), "loc-1"))
"""


def _catalog(root: Path):
    ws, images = make_workspace(root, 12)
    (images / "p001.jpg").write_bytes((images / "p001.jpg").read_bytes()[:200])  # truncated
    from tiefjax.catalog import init_workspace

    init_workspace(ws.root, images)
    return ws


def _kill_after_two_chunks(ws, tmp_path: Path) -> None:
    kill_when_marked(KILLED_SCRIPT, ws.root, tmp_path, "wrote two chunks")


def test_killed_build_resumes_from_its_last_chunk_and_equals_an_uninterrupted_one(tmp_path):
    ws = _catalog(tmp_path / "a")
    _kill_after_two_chunks(ws, tmp_path)
    (work,) = ws.index_dir.glob(".tmp-*")
    assert sorted(p.name for p in (work / "chunks").glob("*.json")) == [
        "000000.json",
        "000001.json",
    ]
    with Store(ws.store_path) as store:  # the finished chunks' detections are stored already
        assert sorted(store.detections()) == [
            "p000",
            "p002",
            "p003",
            "p004",
            "p005",
            "p006",
            "p007",
        ]
    assert current_build(ws) is None

    encoder = FakeEncoder()
    report = build_index(ws, CFG, encoder=encoder, locator=LOCATOR, progress=False)
    assert encoder.windows == 4  # only the third chunk: p008..p011
    assert (report.encoded, report.located, report.resumed) == (4, 4, 7)
    assert report.images == 11 and [e[0] for e in report.errors] == ["p001"]
    assert "7 from an interrupted build" in report.summary()
    assert not list(ws.index_dir.glob(".tmp-*"))
    resumed = current_build(ws)
    assert not (resumed / "chunks").exists()

    other = _catalog(tmp_path / "b")
    build_index(other, CFG, encoder=FakeEncoder(), locator=LOCATOR, progress=False)
    whole = current_build(other)
    a, b = RowTable.open(resumed), RowTable.open(whole)
    assert [a.row(p) for p in range(len(a))] == [b.row(p) for p in range(len(b))]
    for name in ("features.npy", "unsupervised/vectors.npy", "unsupervised/neighbours.npy"):
        np.testing.assert_array_equal(np.load(resumed / name), np.load(whole / name), name)
    with Store(ws.store_path) as a, Store(other.store_path) as b:
        assert a.detections() == b.detections()


def test_interrupted_build_of_other_settings_is_removed_not_resumed(tmp_path):
    ws, _ = make_workspace(tmp_path, 12)

    class Interrupted(FakeEncoder):
        def start(self, windows):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().start(windows)

    with pytest.raises(KeyboardInterrupt):
        build_index(ws, CFG, encoder=Interrupted(), locator=None, progress=False)
    (work,) = ws.index_dir.glob(".tmp-*")
    assert len(list((work / "chunks").glob("*.json"))) == 2  # kept for a resume

    encoder = FakeEncoder(fingerprint="fake-2")  # other weights: nothing there is valid
    report = build_index(ws, CFG, encoder=encoder, locator=None, progress=False)
    assert (report.encoded, report.resumed, encoder.windows) == (12, 0, 12)
    assert not work.exists() and not list(ws.index_dir.glob(".tmp-*"))


def test_a_resumed_build_starts_its_indexes_afresh(tmp_path, monkeypatch):
    from tiefjax.index import build

    ws, _ = make_workspace(tmp_path, 12)
    build_mode = build._build_mode

    def interrupted(*args, **kwargs):
        build_mode(*args, **kwargs)  # the mode's folder is written, then the build is killed
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_build_mode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)
    (work,) = ws.index_dir.glob(".tmp-*")
    assert (work / "unsupervised" / "projection.npy").exists()

    monkeypatch.setattr(build, "_build_mode", build_mode)
    report = build_index(
        ws, CFG.with_(reduction="none"), encoder=FakeEncoder(), locator=None, progress=False
    )
    assert report.resumed == 12 and report.encoded == 0
    assert not (current_build(ws) / "unsupervised" / "projection.npy").exists()
