#!/usr/bin/env python
"""Scale benchmark: an index build over N synthetic descriptors, its time and peak memory.

For each size N (default 100,000 and 1,000,000) a child process writes a workspace with N
store rows (no photos) and N clustered unit descriptors at the index's dimension
(``[index] dim``, 256) into a memory-mapped file, then builds the index from them with
:func:`tiefjax.index.build.build_from_descriptors` (the hook that skips the CNN: the unsupervised
mode's reduction, ScaNN build, auto-tuning, recall and neighbour lists, exactly as
``tiefjax index`` runs them after encoding) and swaps it in. Reported per N: build seconds,
peak RSS of the build (the child's high-water mark, reset after the data was written) against
the issue's target of 1.5 x the float32 matrix + 1 GB, the index kind and recall@10.

Then, each in its own child process: the training feature cache at ``--feature-crops`` crops
(``scale_features.py``: peak RSS while caching, against the issue's 2 GB), and ``export-site``
of ``--export-images`` images (``scale_export.py``: time, files, MB; data files only unless
``--export-media``, which writes and copies a small JPEG per image and makes its thumbnail).

    .venv/bin/python scripts/bench/scale.py [--sizes 100000 1000000] [--dim 256]
        [--feature-crops 200000] [--export-images 100000] [--export-media]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

# before NumPy, as `tiefjax` runs: sets OpenBLAS's thread timeout (see tiefjax/__init__.py)
import tiefjax  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402

GIB = 2**30


def _status_kib(field: str) -> int:
    """A ``VmHWM``/``VmRSS`` figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start the RSS high-water mark again from the current RSS (Linux clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def _write_catalog(
    root: Path, n: int, dim: int, clusters: int, seed: int = 0, size: tuple[int, int] = (640, 480)
):
    """A workspace with ``n`` image rows and ``n`` clustered unit descriptors (memory-mapped,
    written 50,000 rows at a time): (workspace, descriptors, index rows). The index rows (each
    image whole, ``size``) are a :class:`RowTable` saved under ``root`` and memory-mapped, as a
    build's are: the caller holds no Python object per row."""
    from tiefjax.index.row_table import RowTable
    from tiefjax.store import ImageRecord, Store
    from tiefjax.workspace import Workspace

    ws = Workspace(root / "ws")
    ws.root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = np.lib.format.open_memmap(
        root / "descriptors.npy", mode="w+", dtype=np.float32, shape=(n, dim)
    )
    ids = [f"img-{i:08d}" for i in range(n)]
    shas = [hashlib.sha256(i.encode()).hexdigest() for i in ids]
    with Store(ws.store_path) as store:
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            block = centres[rng.integers(0, clusters, e - s)]
            block += 0.6 * rng.standard_normal(block.shape).astype(np.float32)
            vectors[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
            store.upsert_images(
                ImageRecord(i, f"synthetic/{i}.jpg", *size, h)
                for i, h in zip(ids[s:e], shas[s:e], strict=True)
            )
    vectors.flush()
    whole = np.broadcast_to(np.array([0.0, 0.0, *size]), (n, 4))
    RowTable.from_columns(
        ids, shas, whole, ["whole"] * n, np.full(n, np.nan), np.ones(n, bool)
    ).save(root / "rows")
    del ids, shas
    return _open_catalog(root)


def _open_catalog(root: Path):
    """What :func:`_write_catalog` wrote under ``root``, memory-mapped: (workspace,
    descriptors, index rows)."""
    from tiefjax.index.row_table import RowTable
    from tiefjax.workspace import Workspace

    return (
        Workspace(root / "ws"),
        np.load(root / "descriptors.npy", mmap_mode="r"),
        RowTable.open(root),
    )


def synthetic_workspace(n: int, photos: bool = False):  # noqa: ANN201
    """A kept workspace of ``n`` synthetic images for the server and site benchmarks: the rows
    and descriptors of :func:`_write_catalog`, indexed by ``build_from_descriptors``; with
    ``photos``, a 64x48 JPEG per image (thumbnails, the box editor) and one box. Built the first
    time in ``/tmp/tiefjax-synthetic-N[-photos]``, re-used after."""
    import shutil

    from tiefjax.index.build import build_from_descriptors
    from tiefjax.index.config import IndexConfig
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    folder = Path(f"/tmp/tiefjax-synthetic-{n}{'-photos' if photos else ''}")
    if (folder / "ready").exists():
        return Workspace(folder / "ws")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    size = (64, 48) if photos else (640, 480)
    ws, vectors, rows = _write_catalog(folder, n, 256, clusters=max(50, n // 200), size=size)
    if photos:
        from scale_export import _write_photos

        _write_photos(ws, folder / "photos", size)
    build_from_descriptors(ws, vectors, rows, IndexConfig(), log=lambda m: None)
    if photos:
        with Store(ws.store_path) as store:
            store.put_box(store.image_ids()[0], (8, 6, 56, 42))
    (folder / "ready").write_text(f"built in {time.perf_counter() - t0:.0f} s\n")
    return ws


def child(n: int, dim: int, folder: Path) -> dict:
    """One size, in its own process (its own peak RSS): write the catalog, build, measure."""
    from tiefjax.index.build import build_from_descriptors
    from tiefjax.index.config import IndexConfig

    # the catalog is written by a process of its own: what its writer held (a million ids and
    # hashes as Python strings) would otherwise stay in this process's heap, counted in the peak
    t0 = time.perf_counter()
    writer = multiprocessing.get_context("spawn").Process(
        target=_write_catalog, args=(folder, n, dim, max(50, n // 200))
    )
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        raise RuntimeError(f"writing the synthetic catalog failed (exit {writer.exitcode})")
    write_s = time.perf_counter() - t0
    ws, vectors, rows = _open_catalog(folder)
    _reset_peak()
    before_kib = _status_kib("VmRSS")
    t0 = time.perf_counter()
    report = build_from_descriptors(ws, vectors, rows, IndexConfig(), log=lambda m: None)
    build_s = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024
    matrix = n * dim * 4
    mode = report.modes["unsupervised"]
    return {
        "n": n,
        "dim": dim,
        "write_catalog_s": round(write_s, 1),
        "build_s": round(build_s, 1),
        "rss_before_build_gib": round(before_kib * 1024 / GIB, 3),
        "peak_rss_gib": round(peak / GIB, 3),
        "float32_matrix_gib": round(matrix / GIB, 3),
        "target_gib": round((1.5 * matrix + GIB) / GIB, 3),
        "within_target": peak <= 1.5 * matrix + GIB,
        "kind": mode["kind"],
        "index_dim": mode["dim"],
        "recall_at_10": mode["recall_at_10"],
        "warnings": mode["warnings"],
    }


def _features_child(n: int, args: argparse.Namespace) -> dict:
    from scale_features import child as features_child

    return features_child(n, args.folder)


def _export_child(n: int, args: argparse.Namespace) -> dict:
    from scale_export import child as export_child

    return export_child(n, args.dim, args.folder, args.export_media)


#: what one child process measures: ``(n, args) -> figures``
PARTS = {
    "index": lambda n, args: child(n, args.dim, args.folder),
    "features": _features_child,
    "export": _export_child,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256, help="descriptor dimension ([index] dim)")
    ap.add_argument(
        "--feature-crops", type=int, default=200_000, help="crops in the feature cache (0: skip)"
    )
    ap.add_argument("--export-images", type=int, default=100_000, help="images exported (0: skip)")
    ap.add_argument("--export-media", action="store_true", help="export photos and thumbnails too")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--part", choices=PARTS, default="index", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(PARTS[args.part](args.child, args)))
        return 0
    runs = [("index", n) for n in args.sizes]
    runs += [("features", args.feature_crops)] if args.feature_crops else []
    runs += [("export", args.export_images)] if args.export_images else []
    results = []
    for part, n in runs:
        with tempfile.TemporaryDirectory(prefix="tiefjax-scale-") as tmp:
            cmd = [sys.executable, __file__, "--child", str(n), "--dim", str(args.dim)]
            cmd += ["--export-media"] if args.export_media else []
            out = subprocess.run(
                [*cmd, "--part", part, "--folder", tmp], capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                print(out.stdout + out.stderr[-3000:])
                return 1
            print(out.stdout.strip().splitlines()[-1], flush=True)
            if part == "index":
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for a, b in zip(results, results[1:], strict=False):
        ratio = (b["build_s"] / a["build_s"]) / (
            (b["n"] * np.log(b["n"])) / (a["n"] * np.log(a["n"]))
        )
        print(f"build time {a['n']} -> {b['n']}: {ratio:.2f}x what N log N growth predicts")
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpu(s)",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
