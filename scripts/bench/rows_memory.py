#!/usr/bin/env python
"""Memory a server process holds for a build's rows: rows.json as Python objects vs RowTable.

Writes ``rows.json`` of N synthetic rows (default 1,000,000), then in a fresh child process each:
``json``: the rows as :class:`~tiefjax.index.encode.Row` objects plus the id tuple and the two
lookup dicts a ``Searcher`` held before; ``convert``: :meth:`RowTable.open` on a build without
``rows/`` (what an older build costs its first opener); ``mapped``: :meth:`RowTable.open` with
``rows/`` present (every open of a new build). Reported: open seconds, RSS held after opening
(its growth over the empty process), and the peak while opening.

    .venv/bin/python scripts/bench/rows_memory.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from scale import _reset_peak, _status_kib  # noqa: E402

KINDS = ("json", "convert", "mapped")


def child(kind: str, build: Path) -> dict:
    from tiefjax.index.encode import Row
    from tiefjax.index.row_table import RowTable

    gc.collect()
    before = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    if kind == "json":
        rows = [Row.from_json(r) for r in json.loads((build / "rows.json").read_text())]
        ids = tuple(r.id for r in rows)
        held = (rows, {i: n for n, i in enumerate(ids)}, {r.sha256: n for n, r in enumerate(rows)})
        found = held[1].get("img-00000007")
    else:
        table = RowTable.open(build)
        found = table.position("img-00000007")
    seconds = time.perf_counter() - t0
    gc.collect()
    return {
        "kind": kind,
        "open_s": round(seconds, 2),
        "rss_held_mib": round((_status_kib("VmRSS") - before) / 1024),
        "peak_mib": round(_status_kib("VmHWM") / 1024),
        "found": found,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.build)))
        return 0
    with tempfile.TemporaryDirectory(prefix="tiefjax-rows-") as tmp:
        build = Path(tmp)
        rows = [
            {"id": f"img-{i:08d}", "sha256": f"{i:064x}", "box": [0.0, 0.0, 640.0, 480.0],
             "source": "whole", "probability": None, "fallback": True}
            for i in range(args.n)
        ]  # fmt: skip
        (build / "rows.json").write_text(json.dumps(rows))
        del rows
        print(f"{args.n} rows, rows.json {os.path.getsize(build / 'rows.json') / 2**20:.0f} MiB")
        for kind in KINDS:  # "convert" writes rows/, which "mapped" then opens
            cmd = [sys.executable, __file__, "--child", kind, "--build", str(build)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stdout + out.stderr[-3000:])
                return 1
            print(out.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
