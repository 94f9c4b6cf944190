"""``tiefjax init / import / export / demo-catalog`` through the real command line entry point."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefjax.cli import main
from tiefjax.store import Store
from tiefjax.workspace import Workspace


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
            folder / f"{name}.jpg"
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    return folder


def test_init_prints_summary_and_skipped_files(tmp_path: Path, photos: Path, capsys) -> None:
    ws = tmp_path / "ws"
    assert main(["init", str(ws), "--images", str(photos)]) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "added 3" in out
    assert f"skipped {photos / 'broken.jpg'}: " in out
    assert main(["init", str(ws)]) == 0  # re-scan the remembered folder
    assert "unchanged 3" in capsys.readouterr().out


def test_init_bad_input_exits_2_with_message(tmp_path: Path, capsys) -> None:
    assert main(["init", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiefjax init: error: ") and "--images DIR" in err
    assert main(["init", str(tmp_path / "ws"), "--images", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_then_import_into_another_workspace(tmp_path: Path, photos: Path, capsys) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    main(["init", str(src), "--images", str(photos)])
    main(["init", str(dst), "--images", str(photos)])
    with Store(Workspace(src).store_path) as store:
        store.put_box("a", (1, 2, 30, 25))
        store.add_triplet("a", "b", "c")
    for fmt in ("json", "csv"):
        out = tmp_path / f"ann.{fmt}"
        assert main(["export", str(src), str(out)]) == 0
        assert "1 box(es) and 1 triplet(s)" in capsys.readouterr().out
        assert main(["import", str(dst), str(out)]) == 0
        assert "imported" in capsys.readouterr().out
    with Store(Workspace(dst).store_path) as store:
        assert store.stats()["boxes"] == 1 and store.stats()["triplets"] == 1
    assert main(["export", str(src), str(tmp_path / "x.dat"), "--format", "csv"]) == 0


def test_import_bad_file_exits_2_and_writes_nothing(tmp_path: Path, photos: Path, capsys) -> None:
    ws = tmp_path / "ws"
    main(["init", str(ws), "--images", str(photos)])
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"boxes": [{"image_id": "zz", "left": 0, "top": 0, "right": 1, "bottom": 1}]})
    )
    capsys.readouterr()
    assert main(["import", str(ws), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiefjax import: error: ") and "boxes[0]: no image with id 'zz'" in err
    assert main(["import", str(tmp_path / "not-a-ws"), str(bad)]) == 2
    assert "not a tiefjax workspace" in capsys.readouterr().err
    assert main(["export", str(ws), str(tmp_path / "out.xyz")]) == 2
    assert "--format" in capsys.readouterr().err


def test_demo_catalog_calls_the_generator(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []
    fake = types.ModuleType("tiefjax.demo_catalog")
    fake.make_demo_catalog = lambda out, n, seed: calls.append((out, n, seed))
    monkeypatch.setitem(sys.modules, "tiefjax.demo_catalog", fake)
    assert main(["demo-catalog", str(tmp_path / "demo"), "--n", "7", "--seed", "3"]) == 0
    assert calls == [(tmp_path / "demo", 7, 3)]
    assert "tiefjax init" in capsys.readouterr().out
    assert main(["demo-catalog", str(tmp_path / "demo"), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
