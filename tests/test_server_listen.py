"""The listening server (issue 14, item 6): slow clients are cut off with 408 once the header or
body deadline passes, and `tiefjax serve` prints its URL only once it listens."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from _processes import interrupt
from PIL import Image

from tiefjax.catalog import init_workspace
from tiefjax.server import ServerConfig, create_app
from tiefjax.server.listen import make_server


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("listen")
    (root / "images").mkdir()
    Image.new("RGB", (40, 30)).save(root / "images" / "a.jpg")
    init_workspace(root / "ws", root / "images")
    return root / "ws"


@pytest.fixture(scope="module")
def url(ws: Path):
    """A live server on a free loopback port with half-second header and body deadlines."""
    config = ServerConfig(header_timeout_s=0.5, body_timeout_s=0.5)
    urls: list[str] = []
    ready = threading.Event()
    server = make_server(
        create_app(ws, token="t", config=config),
        "127.0.0.1",
        0,
        config,
        lambda u: (urls.append(u), ready.set()),
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    yield urls[0]
    server.should_exit = True
    thread.join(10)


def _dribble(url: str, head: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send ``head`` at once, then ``drip`` one byte per 0.1 s; what came back, and when the
    server closed the connection (seconds after ``head``)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        t0 = time.monotonic()
        try:
            for byte in drip:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:  # the server closed the connection
            pass
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - t0


def test_a_dribbled_body_is_cut_off_with_408(url: str) -> None:
    head = (
        b"POST /api/triplets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
        b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    answer, closed_after = _dribble(url, head, b" " * 400)  # 40 s at this pace
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert closed_after < 3.0


def test_dribbled_headers_are_cut_off_with_408(url: str) -> None:
    answer, closed_after = _dribble(url, b"GET /api/health HTTP/1.1\r\n", b"X-Slow: " + b"a" * 400)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert closed_after < 3.0


def test_prompt_clients_are_served_and_kept_alive(url: str) -> None:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(2):  # two requests on one connection, the second after a pause
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')
            time.sleep(0.3)


def test_serve_prints_its_url_once_it_listens(ws: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiefjax", "serve", str(ws), "--port", str(port), "--token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("ready:" in x for x in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.01)
        ready = next((x for x in lines if "ready:" in x), "")
        assert f"ready: http://127.0.0.1:{port}/" in ready, "".join(lines)
        # no retry loop: once the line is out, the server answers
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            assert json.loads(resp.read()) == {"status": "ok"}
    finally:
        interrupt(proc)
