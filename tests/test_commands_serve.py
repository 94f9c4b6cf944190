"""``tiefjax serve`` argument checks through the real command line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tiefjax.catalog import init_workspace
from tiefjax.cli import main


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30)).save(images / "a.jpg")
    init_workspace(tmp_path / "ws", images)
    return tmp_path / "ws"


@pytest.mark.parametrize("port", ["99999", "0", "65536", "-1"])
def test_port_out_of_range_is_one_line(ws: Path, capsys, port: str) -> None:
    """--port 99999 used to print that port and listen on another one."""
    assert main(["serve", str(ws), "--port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tiefjax serve: error: --port must be a TCP port from 1 to 65535, got {port}"


def test_port_from_the_settings_file(ws: Path, capsys) -> None:
    (ws / "tiefjax.toml").write_text("[server]\nport = 70000\n")
    assert main(["serve", str(ws)]) == 2
    assert "[server] port must be a TCP port from 1 to 65535, got 70000" in capsys.readouterr().err
