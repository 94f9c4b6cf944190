"""Abuse benchmark: do normal requests stay fast while 16 clients send worst-case uploads?

Starts ``tiefjax serve`` on 127.0.0.1 (loopback only) and measures two normal clients, one asking
for similar images by id and one searching by a catalog photo, first alone and then while 16
clients send worst-case uploads back to back: PNGs exactly at the default limits (40,000,000
pixels, 10:1, so the locator scores a 448 x 4480 photo), which must be decoded whole. Bounded in
time (``--seconds`` per phase) and requests (``--max-requests`` per client).

    .venv/bin/python scripts/bench/abuse.py                  # tiny demo workspace in a temp dir
    .venv/bin/python scripts/bench/abuse.py --workspace WS   # an existing, indexed workspace
    .venv/bin/python scripts/bench/abuse.py --json out.json

Targets (issue 14): the normal requests' p99 under abuse < 3x their p99 alone, server RSS < 2 GB,
no errors for the normal clients (the abusive ones may get 503 with Retry-After).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image
from server import HOST, free_port, get, make_workspace, post_image

TOKEN = "abuse-bench"


def worst_png(width: int = 20_000, height: int = 2_000) -> bytes:
    """A PNG at the default pixel and aspect limits; a gradient keeps it small on the wire."""
    row = np.linspace(0, 255, width, dtype=np.uint8)
    return _png(Image.fromarray(np.broadcast_to(row, (height, width)).copy(), "L"))


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=9)
    return out.getvalue()


class Server:
    """``tiefjax serve`` as a child process, ready once it prints its URL; peak RSS sampled."""

    def __init__(self, ws: Path, port: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tiefjax", "serve", str(ws), "--port", str(port)]
            + ["--token", TOKEN],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(self.proc.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while not any("ready:" in line for line in lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tiefjax serve did not get ready: {''.join(lines)}")
            time.sleep(0.05)
        self.port = port
        self.peak_rss = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.05)

    def stop(self) -> None:
        self._sampling = False
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        (int(x.split(b":", 1)[1]) for x in lines if x.lower().startswith(b"content-length:")), 0
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _client(
    port: int, request: bytes, stop: float, max_requests: int, log: list[tuple[int, float]]
) -> None:
    """Send ``request`` back to back until ``stop``; (status, seconds) of each into ``log``
    (status 0: the connection failed; it is opened again)."""
    connection = None
    while time.perf_counter() < stop and len(log) < max_requests:
        t0 = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection(HOST, port)
            status = await _exchange(*connection, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status, connection = 0, None
        log.append((status, time.perf_counter() - t0))


def _summary(log: list[tuple[int, float]]) -> dict[str, object]:
    ms = np.array([t for _, t in log]) * 1000
    statuses: dict[str, int] = {}
    for status, _ in log:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": len(log),
        "statuses": statuses,
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
    }


async def _phase(
    port: int,
    normal: dict[str, bytes],
    abusive: bytes | None,
    clients: int,
    seconds: float,
    max_requests: int,
) -> dict[str, dict[str, object]]:
    """One client per ``normal`` request, plus ``clients`` sending ``abusive`` (when given)."""
    stop = time.perf_counter() + seconds
    logs: dict[str, list[tuple[int, float]]] = {name: [] for name in normal}
    abuse_logs: list[list[tuple[int, float]]] = [[] for _ in range(clients if abusive else 0)]
    tasks = [_client(port, req, stop, max_requests, logs[n]) for n, req in normal.items()]
    tasks += [_client(port, abusive or b"", stop, max_requests, log) for log in abuse_logs]
    await asyncio.gather(*tasks)
    result = {name: _summary(log) for name, log in logs.items()}
    if abuse_logs:
        result["abusive"] = _summary([entry for log in abuse_logs for entry in log])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="an indexed workspace (default: a tiny demo one)")
    parser.add_argument("--n", type=int, default=60, help="demo catalog size when building one")
    parser.add_argument("--clients", type=int, default=16, help="abusive clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per client and phase")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="tiefjax-abuse-")
    if args.workspace:
        ws = Path(args.workspace)
    else:
        print(f"building a {args.n}-image demo workspace ...", file=sys.stderr)
        ws = make_workspace(Path(tmp.name), args.n)
    from tiefjax.store import Store

    with Store(ws / "tiefjax.sqlite") as store:
        records = store.list_images()
    photo = Path(records[0].path).read_bytes()
    normal = {
        "similar": get(f"/api/images/{quote(records[1].id, safe='')}/similar?k=10"),
        "upload": post_image("/api/search?k=10", photo),
    }
    abusive = post_image("/api/search?k=10", worst_png())
    server = Server(ws, free_port())
    try:
        asyncio.run(_phase(server.port, normal, None, 0, 3.0, 20))  # compile and warm up
        alone = asyncio.run(_phase(server.port, normal, None, 0, args.seconds, args.max_requests))
        print(f"alone: {alone}", file=sys.stderr)
        rss_alone = server.peak_rss
        loaded = asyncio.run(
            _phase(server.port, normal, abusive, args.clients, args.seconds, args.max_requests)
        )
        print(f"under abuse: {loaded}", file=sys.stderr)
    finally:
        server.stop()
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "workspace": args.workspace or f"tiny demo, {len(records)} images",
        "abusive_upload": f"PNG 20000x2000 (40,000,000 px, 10:1), {len(abusive) // 1024} KB",
        "abusive_clients": args.clients,
        "seconds_per_phase": args.seconds,
        "alone": alone,
        "under_abuse": loaded,
        "p99_ratio": {
            name: round(loaded[name]["p99_ms"] / alone[name]["p99_ms"], 2)  # type: ignore[operator]
            for name in normal
        },
        "peak_rss_mb": {"alone": rss_alone // 2**20, "under_abuse": server.peak_rss // 2**20},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
