"""Registering a folder of photos: ids, sizes, hashes, re-scans, and files that must be skipped."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefjax.catalog import init_workspace
from tiefjax.errors import InvalidInput, NotFound
from tiefjax.settings import config_template
from tiefjax.store import Box, Store
from tiefjax.workspace import Workspace


def _photo(path: Path, width: int = 40, height: int = 30, seed: int = 0, **save) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix]
    Image.fromarray(pixels).save(path, fmt, **save)
    return path


def _truncated(path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.jpg", seed=1)
    _photo(folder / "b.png", 50, 20, seed=2)
    _photo(folder / "c.webp", seed=3)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _store(ws: Path) -> Store:
    return Store(Workspace(ws).store_path)


@pytest.fixture
def ws_with_box_on_a(tmp_path: Path, photos: Path) -> Path:
    """A workspace registered from ``photos`` in which image ``a`` has a box."""
    ws = tmp_path / "ws"
    init_workspace(ws, photos)
    with _store(ws) as store:
        store.put_box("a", (1, 1, 10, 10))
    return ws


def test_registers_ids_sizes_hashes_and_settings(tmp_path: Path, photos: Path) -> None:
    report = init_workspace(tmp_path / "ws", photos)
    assert sorted(report.added) == ["a", "b", "c"] and not report.skipped
    assert report.total == 3
    with _store(tmp_path / "ws") as store:
        b = store.get_image("b")
        assert (b.width, b.height) == (50, 20)
        assert b.path == str(photos / "b.png")
        assert b.sha256 == hashlib.sha256((photos / "b.png").read_bytes()).hexdigest()
        assert store.get_meta("images_dir") == str(photos.resolve())
    assert Workspace(tmp_path / "ws").config_path.exists()
    assert "3 images" in report.summary()


def test_size_is_upright_after_exif_orientation(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed 90 degrees turned
    _photo(folder / "rot.jpg", 40, 30, exif=exif)
    init_workspace(tmp_path / "ws", folder)
    with _store(tmp_path / "ws") as store:
        rec = store.get_image("rot")
    assert (rec.width, rec.height) == (30, 40)


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, photos: Path) -> None:
    (photos / "junk.jpg").write_bytes(b"definitely not a jpeg")
    _truncated(photos / "cut.jpg", "JPEG")
    _truncated(photos / "cutpng.png", "PNG")
    (photos / "empty.png").write_bytes(b"")
    report = init_workspace(tmp_path / "ws", photos)
    assert sorted(report.added) == ["a", "b", "c"]
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"junk.jpg", "cut.jpg", "cutpng.png", "empty.png"}
    assert "not a readable image" in reasons["junk.jpg"]
    assert "truncated" in reasons["cut.jpg"]
    assert "truncated" in reasons["cutpng.png"]
    summary = report.summary()
    assert f"skipped {photos / 'cut.jpg'}: " in summary


def test_duplicate_stems_are_skipped(tmp_path: Path, photos: Path) -> None:
    _photo(photos / "d.jpg", seed=4)
    _photo(photos / "d.png", seed=5)
    report = init_workspace(tmp_path / "ws", photos)
    assert "d" not in report.added
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(skipped) == {"d.jpg", "d.png"}
    assert "share the id 'd'" in skipped["d.jpg"]


def test_duplicate_of_a_registered_stem_keeps_the_registered_file(
    ws_with_box_on_a: Path, photos: Path
) -> None:
    ws = ws_with_box_on_a
    _photo(photos / "a.png", seed=9)
    report = init_workspace(ws)
    assert [Path(s.path).name for s in report.skipped] == ["a.png"]
    assert "registered a.jpg" in report.skipped[0].reason
    with _store(ws) as store:
        assert store.get_image("a").path.endswith("a.jpg")
        assert store.get_box("a") is not None


def test_rescan_picks_up_added_changed_removed(tmp_path: Path, photos: Path) -> None:
    ws = tmp_path / "ws"
    init_workspace(ws, photos)
    with _store(ws) as store:
        store.put_box("a", (1, 1, 20, 20))  # still fits after a.jpg shrinks to 25x25
        store.put_box("b", (1, 1, 45, 15))  # no longer fits when b.png becomes 30x30
        store.add_triplet("a", "b", "c")
        fp = store.annotations_fingerprint()

    assert init_workspace(ws).unchanged == 3  # nothing changed: nothing to do
    with _store(ws) as store:
        assert store.annotations_fingerprint() == fp

    _photo(photos / "a.jpg", 25, 25, seed=11)
    _photo(photos / "b.png", 30, 30, seed=12)
    (photos / "c.webp").unlink()
    _photo(photos / "e.jpg", seed=13)
    report = init_workspace(ws)  # the remembered folder
    assert report.added == ["e"]
    assert sorted(report.changed) == ["a", "b"]
    assert report.removed == ["c"]
    assert report.removed_triplets == 1
    assert [i for i, _ in report.dropped_boxes] == ["b"]
    assert "no longer fits" in report.summary()
    with _store(ws) as store:
        assert store.image_ids() == ["a", "b", "e"]
        assert (store.get_image("a").width, store.get_image("a").height) == (25, 25)
        assert store.get_box("a").box == Box(1, 1, 20, 20)
        assert store.get_box("b") is None
        assert store.count_triplets() == 0


def test_moved_folder_updates_paths(tmp_path: Path, photos: Path) -> None:
    ws = tmp_path / "ws"
    init_workspace(ws, photos)
    moved = photos.rename(tmp_path / "moved")
    report = init_workspace(ws, moved)
    assert sorted(report.moved) == ["a", "b", "c"] and not report.removed
    with _store(ws) as store:
        assert store.get_image("a").path == str(moved / "a.jpg")
        assert store.get_meta("images_dir") == str(moved)


def test_registered_file_that_became_corrupt_keeps_its_annotations(
    ws_with_box_on_a: Path, photos: Path
) -> None:
    ws = ws_with_box_on_a
    _truncated(photos / "a.jpg", "JPEG")
    report = init_workspace(ws)
    assert not report.removed and [Path(s.path).name for s in report.skipped] == ["a.jpg"]
    assert "keeping its earlier registration" in report.skipped[0].reason
    with _store(ws) as store:
        assert store.get_box("a") is not None


def test_clear_errors_for_bad_arguments(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(InvalidInput, match="--images DIR"):
        init_workspace(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(NotFound, match="does not exist"):
        init_workspace(tmp_path / "ws", tmp_path / "nowhere")
    init_workspace(tmp_path / "ws", photos)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="refusing to remove all 3"):
        init_workspace(tmp_path / "ws", empty)
    with _store(tmp_path / "ws") as store:
        assert store.count_images() == 3


def test_settings_file_comes_from_the_settings_template(tmp_path: Path, photos: Path) -> None:
    init_workspace(tmp_path / "ws", photos)
    assert Workspace(tmp_path / "ws").config_path.read_text() == config_template()
    (Workspace(tmp_path / "ws").config_path).write_text("# mine\n")
    init_workspace(tmp_path / "ws")
    assert Workspace(tmp_path / "ws").config_path.read_text() == "# mine\n"  # never overwritten


def test_unusable_names_and_links_out_of_the_folder_are_skipped(
    tmp_path: Path, photos: Path
) -> None:
    outside = _photo(tmp_path / "secret.jpg", seed=9)
    (photos / "out.jpg").symlink_to(outside)
    (photos / "alias.jpg").symlink_to(photos / "a.jpg")  # a link inside the folder is fine
    _photo(photos / "new\nline.jpg")
    _photo(photos / "tab\there.png")
    _photo(photos / os.fsdecode(b"latin\xe9.jpg"))  # not UTF-8: a lone surrogate in Python
    report = init_workspace(tmp_path / "ws", photos)
    with _store(tmp_path / "ws") as store:
        assert store.image_ids() == ["a", "alias", "b", "c"]
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert reasons["out.jpg"] == (
        f"it is a link to {outside}, outside {photos}; copy the photo into the folder instead"
    )
    for name in ("new\nline.jpg", "tab\there.png"):
        assert "contains a control character" in reasons[name]
    assert "not valid Unicode" in reasons[os.fsdecode(b"latin\xe9.jpg")]
    lines = report.summary().splitlines()
    assert len(lines) == 2 + 4  # one line per skipped file, newline or not
    assert any(line.startswith(f"  skipped '{photos}/new\\nline.jpg': its name") for line in lines)
