"""Read-only and damaged workspaces (issue 14, item 4): reads work on a read-only workspace and
writes say how to fix the permissions; an empty or damaged store is never rebuilt; every failure
is one line and never advice to move or delete the annotations."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefjax.cli import main
from tiefjax.store import Store
from tiefjax.workspace import Workspace

#: Runs each argv list given as JSON through the command line (and a few requests through the
#: server app), printing one JSON result per command: exit code, stdout, stderr.
_DRIVER = r"""
import contextlib, io, json, sys
from starlette.testclient import TestClient
from tiefjax.cli import main
from tiefjax.server import create_app

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append({"argv": argv, "rc": rc, "out": out.getvalue(), "err": err.getvalue()})
with TestClient(create_app(sys.argv[2], token="t")) as client:
    auth = {"Authorization": "Bearer t"}
    for method, url, body in [
        ("GET", "/api/images", None),
        ("GET", "/api/images/a/thumb", None),
        ("GET", "/api/images/a/box", None),
        ("PUT", "/api/images/a/box", {"left": 1, "top": 1, "right": 9, "bottom": 9, "version": 1}),
        ("POST", "/api/triplets", {"reference": "a", "positive": "b", "negative": "c"}),
    ]:
        r = client.request(method, url, json=body, headers=auth)
        results.append({"argv": [method, url], "rc": r.status_code, "out": r.text, "err": ""})
print(json.dumps(results))
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Three photos registered, one box and one triplet."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
            photos / f"{name}.jpg"
        )
    ws = tmp_path / "ws"
    assert main(["init", str(ws), "--images", str(photos)]) == 0
    with Store(Workspace(ws).store_path) as store:
        store.put_box("a", (1, 2, 30, 25))
        store.add_triplet("a", "b", "c")
    return ws


def _run_read_only(ws: Path, commands: list[list[str]]) -> list[dict]:
    """The driver with ``ws`` read-only for real: chmod for a normal user; root ignores
    permissions, so there a private mount namespace bind-mounts the folder read-only."""
    cmd = [sys.executable, "-c", _DRIVER, json.dumps(commands), str(ws)]
    modes = {p: p.stat().st_mode for p in [ws, *ws.rglob("*")]}
    if os.geteuid() == 0:
        probe = ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{ws}' '{ws}'"]
        if shutil.which("unshare") is None or subprocess.run(probe).returncode != 0:
            pytest.skip("running as root without mount namespaces: cannot make a folder read-only")
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', ws, *cmd]
    else:
        for path, mode in modes.items():
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _one_line_error(result: dict, *needles: str) -> str:
    """The command failed with exit code 2 and one line naming the problem (no traceback);
    device commands may say which devices they run on before it."""
    assert result["rc"] == 2, result
    assert "Traceback" not in result["err"], result["err"]
    err = result["err"].strip().splitlines()[-1]
    assert ": error: " in err and result["err"].count(": error: ") == 1, result["err"]
    for needle in needles:
        assert needle in err, err
    assert "move it" not in err and "delete" not in err, err
    return err


def test_read_only_workspace_reads_work_and_writes_say_how_to_fix(
    workspace: Path, tmp_path: Path
) -> None:
    before = Workspace(workspace).store_path.read_bytes()
    (tmp_path / "in.json").write_text(
        json.dumps({"boxes": [{"image_id": "b", "left": 1, "top": 1, "right": 5, "bottom": 5}]})
    )
    ws = str(workspace)
    results = _run_read_only(
        workspace,
        [
            ["export", ws, str(tmp_path / "out.json")],
            ["export-site", ws, str(tmp_path / "site")],
            ["import", ws, str(tmp_path / "in.json")],
            ["init", ws],
            ["prepare", ws],
            ["train", ws, "ranking", "--steps", "1"],
            ["index", ws],
        ],
    )
    export, site, imported, init, prepare, train, index, *requests = results
    assert export["rc"] == 0 and "1 box(es) and 1 triplet(s)" in export["out"]
    assert site["rc"] == 0 and (tmp_path / "site" / "index.html").is_file()
    assert len(list((tmp_path / "site").rglob("*.jpg"))) >= 3  # thumbnails made elsewhere
    for result in (imported, init, prepare, train, index):
        _one_line_error(result, "is read-only", "chmod", "nothing was changed")
    listing, thumb, box, put, post = requests
    assert listing["rc"] == 200 and json.loads(listing["out"])["total"] == 3
    assert thumb["rc"] == 200 and box["rc"] == 200
    for refused in (put, post):
        assert (
            refused["rc"] == 403
            and "is read-only" in json.loads(refused["out"])["error"]["message"]
        )
    assert Workspace(workspace).store_path.read_bytes() == before


def _damage(path: Path) -> None:
    """Overwrite every page after the first (the header stays valid, the tables do not)."""
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (_damage, "is damaged"),
        (lambda p: p.write_bytes(b"not sqlite at all" * 300), "is damaged"),
    ],
    ids=["empty", "damaged-pages", "not-sqlite"],
)
@pytest.mark.parametrize("command", ["export", "prepare", "init", "import"])
def test_damaged_store_is_one_line_and_never_rebuilt(
    workspace: Path, tmp_path: Path, capsys, damage, needle: str, command: str
) -> None:
    store = Workspace(workspace).store_path
    damage(store)
    before = store.read_bytes()
    argv = {
        "export": ["export", str(workspace), str(tmp_path / "out.json")],
        "prepare": ["prepare", str(workspace)],
        "init": ["init", str(workspace)],
        "import": ["import", str(workspace), str(tmp_path / "in.json")],
    }[command]
    (tmp_path / "in.json").write_text(json.dumps({"boxes": [], "triplets": []}))
    capsys.readouterr()
    rc = main(argv)
    err = _one_line_error({"rc": rc, "err": capsys.readouterr().err}, needle)
    assert "restore it from a backup" in err.lower()
    assert store.read_bytes() == before  # not rebuilt, not "repaired"
    assert not (tmp_path / "out.json").exists()


def test_init_on_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "photos").mkdir()
    assert main(["init", str(tmp_path / "afile"), "--images", str(tmp_path / "photos")]) == 2
    _one_line_error({"rc": 2, "err": capsys.readouterr().err}, "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"
