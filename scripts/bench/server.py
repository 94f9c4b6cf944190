"""Server benchmark: similar-by-id against a bare-Starlette floor, and upload search with and
without micro-batching. Servers run as child processes on 127.0.0.1; the load comes from this
process (raw keep-alive HTTP/1.1 over asyncio, so the client costs little), bounded in time and
request count.

    .venv/bin/python scripts/bench/server.py                 # tiny demo workspace in a temp dir
    .venv/bin/python scripts/bench/server.py --workspace WS  # an existing, indexed workspace
    .venv/bin/python scripts/bench/server.py --demo default  # the trained demo workspace
    .venv/bin/python scripts/bench/server.py --json out.json

Targets (docs/benchmarks.md): similar-by-id p99 < 20 ms and >= 0.7x the floor's req/s at 16
concurrent clients; micro-batched upload search >= 2x the throughput of one search per request.
Upload search is measured two ways: one search per request (micro-batch and encoder batch 1)
and micro-batched (up to ``--batch`` uploads per encoder call, the server's defaults). The tiny
default workspace has no trained locator, so an upload is one encoder pass over the whole photo;
``--demo SIZE`` first runs ``tiefjax demo`` at that size (training included), so uploads are
located too (three encoder passes and the heads' windows per photo at the default size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

# before NumPy, as in `tiefjax serve` (sets OpenBLAS's thread timeout; see tiefjax/__init__.py)
import tiefjax  # noqa: F401

# isort: split
import numpy as np

HOST = "127.0.0.1"


# -- child processes: the servers under test -------------------------------------------------
def serve_app(ws: str, port: int, batch_max: int, encoder_batch: int, wait_ms: float) -> None:
    """``tiefjax serve`` as configured here (encoder_batch 0 = the server's automatic choice)."""
    import uvicorn

    from tiefjax.server import ServerConfig, create_app

    config = ServerConfig(
        batch_max=batch_max, batch_wait_ms=wait_ms, encoder_batch=encoder_batch, reload_check_s=2.0
    )
    app = create_app(ws, token="bench", config=config)
    state = app.state.tiefjax
    log_path = os.environ.get("BENCH_BATCH_LOG")
    batch_fn = state.batcher.fn

    def logged(key, items):  # record batch sizes and times for the report
        t0 = time.perf_counter()
        try:
            return batch_fn(key, items)
        finally:
            with open(log_path, "a") as f:
                f.write(f"{len(items)} {time.perf_counter() - t0:.4f}\n")

    if log_path:
        state.batcher.fn = logged
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def serve_floor(port: int, body_path: str) -> None:
    """The floor: a bare Starlette JSON endpoint answering a same-sized body, same uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    body = json.loads(Path(body_path).read_text())

    async def similar(request):
        return JSONResponse(body)

    async def health(request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/api/health", health), Route("/similar/{id}", similar)])
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Child:
    """A server child process, stopped on exit."""

    def __init__(self, args: list[str], port: int, timeout: float = 180.0, env=None):
        self.port = port
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads could block the child
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()[-2000:]}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5) as s:
                    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the load generator ------------------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _load(
    port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(HOST, port)
        i = n
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                req = requests[i % len(requests)]
                i += clients
                t0 = time.perf_counter()
                writer.write(req)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "errors": errors,
        "seconds": round(wall, 2),
        "req_s": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


def load(port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int):
    return asyncio.run(_load(port, requests, clients, seconds, max_requests))


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def post_image(path: str, data: bytes) -> bytes:
    boundary = "benchboundary7d3f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- the benchmark -----------------------------------------------------------------------------
def make_workspace(root: Path, n: int) -> Path:
    from tiefjax.catalog import init_workspace
    from tiefjax.demo_catalog import make_demo_catalog
    from tiefjax.index.build import build_index
    from tiefjax.index.config import IndexConfig

    make_demo_catalog(root / "demo", n, seed=0)
    init_workspace(root / "ws", root / "demo" / "images")
    build_index(root / "ws", IndexConfig.tiny(), progress=False, log=lambda m: None)
    return root / "ws"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="an indexed workspace (default: a tiny demo one)")
    parser.add_argument("--n", type=int, default=120, help="demo catalog size when building one")
    parser.add_argument("--demo", help="run `tiefjax demo` at this size first (trained locator)")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="N synthetic images as scripts/bench/scale.py makes them (similar-by-id only)",
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="per similar-by-id round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating floor/app rounds")
    parser.add_argument("--upload-seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=16, help="micro-batch size")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="micro-batch wait")
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-similar", action="store_true")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="tiefjax-bench-")
    if args.workspace:
        ws = Path(args.workspace)
    elif args.synthetic:
        from scale import synthetic_workspace

        print(f"a {args.synthetic}-image synthetic workspace ...", file=sys.stderr)
        ws = synthetic_workspace(args.synthetic).root
        args.skip_upload = True  # synthetic descriptors: an upload's would not match them
    elif args.demo:
        from tiefjax.demo import run_demo

        print(f"running the {args.demo} demo (training included) ...", file=sys.stderr)
        ws = Path(tmp.name) / "demo"
        run_demo(ws, size=args.demo, serve=False, out=lambda line: None)
    else:
        print(f"building a {args.n}-image demo workspace ...", file=sys.stderr)
        ws = make_workspace(Path(tmp.name), args.n)

    from tiefjax.store import Store

    with Store(ws / "tiefjax.sqlite") as store:
        records = store.list_images()
    ids = [r.id for r in records]
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "images": len(ids),
        "clients": args.clients,
        "workspace": args.workspace
        or (f"synthetic {args.synthetic}" if args.synthetic else "")
        or (f"demo {args.demo} (trained)" if args.demo else "tiny"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }

    if not args.skip_similar:
        # similar-by-id vs floor, alternating rounds so both see the same machine load
        floor_body = Path(tmp.name) / "floor.json"
        port_app, port_floor = free_port(), free_port()
        with Child(["--serve-app", str(ws), str(port_app), "16", "16", "10"], port_app) as app:
            warm = [get(f"/api/images/{quote(i, safe='')}/similar?k=10") for i in ids]
            url = f"http://{HOST}:{app.port}/api/images/{quote(ids[0], safe='')}/similar?k=10"
            with urllib.request.urlopen(url) as r:  # the floor answers a body of the same size
                floor_body.write_bytes(r.read())
            with Child(["--serve-floor", str(port_floor), str(floor_body)], port_floor) as floor:
                floor_reqs = [get(f"/similar/{quote(i, safe='')}") for i in ids]
                load(floor.port, floor_reqs, args.clients, 1.0, args.max_requests)  # warm-up
                # every round goes on where the last stopped, so a big catalog's rounds ask for
                # images not asked before (not answers the server's cache kept from round one)
                asked = load(app.port, warm, args.clients, 1.0, args.max_requests)["requests"]
                rounds = []
                for _ in range(args.rounds):
                    f = load(floor.port, floor_reqs, args.clients, args.seconds, args.max_requests)
                    start = asked % len(warm)
                    ahead = warm[start:] + warm[:start]
                    a = load(app.port, ahead, args.clients, args.seconds, args.max_requests)
                    asked += a["requests"]
                    rounds.append((f, a))
                    print(f"floor {f}\nsimilar {a}", file=sys.stderr)
        best = max(rounds, key=lambda fa: fa[1]["req_s"] / max(fa[0]["req_s"], 1e-9))
        floor_rs = float(np.mean([f["req_s"] for f, _ in rounds]))
        app_rs = float(np.mean([a["req_s"] for _, a in rounds]))
        results["similar"] = {
            "floor_rounds": [f for f, _ in rounds],
            "app_rounds": [a for _, a in rounds],
            "floor_req_s": round(floor_rs, 1),
            "app_req_s": round(app_rs, 1),
            "ratio": round(app_rs / floor_rs, 2),
            "app_p50_ms": float(np.median([a["p50_ms"] for _, a in rounds])),
            "app_p99_ms": float(max(a["p99_ms"] for _, a in rounds)),
            "best_round_ratio": round(best[1]["req_s"] / best[0]["req_s"], 2),
        }

    if not args.skip_upload:
        photo = Path(records[0].path).read_bytes()
        reqs = [post_image("/api/search?k=10", photo)]
        upload = {}
        for label, batch_max, enc_batch in (
            ("one_per_request", 1, 1),
            ("micro_batched", args.batch, 0),  # the server's default encoder batch
        ):
            port = free_port()
            wait = str(args.batch_wait_ms)
            child_args = ["--serve-app", str(ws), str(port), str(batch_max), str(enc_batch), wait]
            batch_log = Path(tmp.name) / f"batches-{label}.json"
            with Child(child_args, port, env={"BENCH_BATCH_LOG": str(batch_log)}) as srv:
                load(srv.port, reqs, 1, 30.0, 2)  # compile
                load(srv.port, reqs, args.clients, 3.0, 10_000)  # warm all batch sizes
                time.sleep(0.5)
                before = _lines(batch_log)
                res = load(srv.port, reqs, args.clients, args.upload_seconds, args.max_requests)
                time.sleep(0.5)
                sizes = [int(line.split()[0]) for line in _lines(batch_log)[len(before) :]]
                single = load(srv.port, reqs, 1, 3.0, 30)
            res["single_client_p50_ms"] = single["p50_ms"]
            res["mean_batch"] = round(float(np.mean(sizes)), 1) if sizes else None
            upload[label] = res
            print(f"upload {label}: {res}", file=sys.stderr)
        upload["speedup"] = round(
            upload["micro_batched"]["req_s"] / upload["one_per_request"]["req_s"], 2
        )
        results["upload"] = upload

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-app":
        serve_app(*sys.argv[2:3], *map(int, sys.argv[3:6]), float(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-floor":
        serve_floor(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
