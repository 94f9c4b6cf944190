#!/usr/bin/env python
"""``tiefjax prepare`` throughput and memory.

    .venv/bin/python scripts/bench/prepare.py                    # n=60 demo + memory at 250/2000
    .venv/bin/python scripts/bench/prepare.py --n 60 --memory 0  # speed only

1. Speed, on a demo catalog (``make_demo_catalog`` + ``load_ground_truth``): crops/s of a full
   ``prepare`` (crop sampling, decode, resize, encode, three tfds ArrayRecord sets) next to
   plain decode-only img/s of the same photos in the same run, with the same thread pool.
2. Storage choice: crops stored as encoded bytes (what prepare does) vs crops stored as
   (source photo, crop window) and cut at load time: the load-time cost of each per record,
   read in random order, and the write-time cost the bytes pay for it.
3. Memory: peak RSS of a fresh process preparing a synthetic catalog of N photos (a few small
   textured JPEGs repeated under different ids), for two sizes of N: the kernel's high-water
   mark (VmHWM, reset after the imports) and ``resource.getrusage``'s ru_maxrss. If crops
   stream, the peak does not grow with N.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402


def _rss_mb() -> float:
    """Peak RSS of this process, MB (``getrusage``; Linux carries it over ``exec`` from the
    forking parent, so a child's figure can start at the parent's size: see ``_hwm_mb``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_hwm() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs`` 5), so VmHWM covers what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def speed(n: int, rounds: int) -> dict[str, float]:
    from tiefjax.catalog import init_workspace
    from tiefjax.data.crops import PrepareConfig, decode_size, render_crops, sample_crops
    from tiefjax.demo_catalog import load_ground_truth, make_demo_catalog
    from tiefjax.images import load_rgb, prefetch
    from tiefjax.prepare import _WORKERS, load_split, prepare
    from tiefjax.store import Store
    from tiefjax.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        manifest = make_demo_catalog(tmp / "demo", n, 0)
        ws = Workspace(tmp / "ws")
        init_workspace(ws.root, tmp / "demo" / "images")
        with Store(ws.store_path) as store:
            load_ground_truth(store, manifest, 0)
            records = store.list_images()
            boxes = {k: v.box.as_tuple() for k, v in store.boxes().items()}
        paths = [Path(r.path) for r in records]
        config = PrepareConfig()

        decode, crops_s, img_s, crop_stage = [], [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _, result in prefetch(load_rgb, paths, workers=_WORKERS, depth=2 * _WORKERS):
                assert not isinstance(result, BaseException), result
            decode.append(len(paths) / (time.perf_counter() - t))
            t = time.perf_counter()
            summary = prepare(ws, config, force=True)
            seconds = time.perf_counter() - t
            total = sum(summary.counts["classification"][s]["total"] for s in ("train", "test"))
            crops_s.append(total / seconds)
            img_s.append(summary.with_box / seconds)
            crop_stage.append(summary.crops_per_second)

        # -- load time: bytes (tfds record, JPEG decode) vs (photo, window) cut at load time --
        src = load_split(ws, "classification", "train")
        order = list(range(len(src)))
        random.Random(0).shuffle(order)
        order = order[: min(400, len(order))]
        t = time.perf_counter()
        for i in order:
            src[i]
        bytes_rps = len(order) / (time.perf_counter() - t)

        refs = []  # what a (path, window) record would hold, for the same number of crops
        by_id = {r.id: r for r in records}
        for image_id, box in boxes.items():
            rec = by_id[image_id]
            for spec in sample_crops(image_id, rec.width, rec.height, box, config):
                refs.append((rec, spec))
        random.Random(0).shuffle(refs)
        refs = refs[: len(order)]
        t = time.perf_counter()
        for rec, spec in refs:
            img = load_rgb(rec.path, target_size=decode_size(rec.width, rec.height, config))
            next(render_crops(img, [spec]))
        path_rps = len(refs) / (time.perf_counter() - t)

        t = time.perf_counter()
        for image_id, box in boxes.items():
            rec = by_id[image_id]
            sample_crops(image_id, rec.width, rec.height, box, config)
        geometry_cps = total / (time.perf_counter() - t)
        return {
            "photos": len(paths),
            "crops": total,
            "decode_img_s": statistics.median(decode),
            "prepare_crops_s": statistics.median(crops_s),
            "prepare_img_s": statistics.median(img_s),
            "crop_stage_crops_s": statistics.median(crop_stage),
            "load_bytes_rec_s": bytes_rps,
            "load_path_rec_s": path_rps,
            "geometry_only_crops_s": geometry_cps,
            "jpeg_kb_per_crop": _kb_per_record(ws, summary.build),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kb_per_record(ws, build: str) -> float:
    folder = ws.datasets_dir / build / "classification"
    size = sum(p.stat().st_size for p in folder.rglob("*.array_record-*"))
    info = json.loads(next(folder.rglob("dataset_info.json")).read_text())
    count = sum(int(n) for s in info["splits"] for n in s["shardLengths"])
    return size / 1024 / count


def make_catalog(n: int, root: Path) -> None:
    """A workspace of ``n`` photos: a few small textured JPEGs repeated under different ids."""
    from PIL import Image

    from tiefjax.store import Box, ImageRecord, Store
    from tiefjax.workspace import Workspace

    rng = np.random.default_rng(0)
    textures = []
    for i in range(8):
        w, h = 360 + 20 * i, 480
        px = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(px).resize((w, h), Image.Resampling.BICUBIC)
        out = root / f"texture{i}.jpg"
        img.save(out, quality=90)
        textures.append((out.read_bytes(), w, h))
    images = root / "images"
    images.mkdir()
    ws = Workspace(root / "ws")
    ws.root.mkdir()
    with Store(ws.store_path) as store:
        recs = []
        for k in range(n):
            data, w, h = textures[k % len(textures)]
            path = images / f"p{k:06d}.jpg"
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            recs.append(ImageRecord(path.stem, str(path), w, h, digest))
        store.upsert_images(recs)
        with store.transaction():
            for k, rec in enumerate(recs):
                box = Box(40 + k % 30, 60, rec.width - 50, rec.height - 40 - k % 20)
                store.put_box(rec.id, box, expected_version=None)
                if k >= 2:
                    store.add_triplet(rec.id, recs[k - 1].id, recs[k - 2].id)


def prepare_child(root: Path) -> None:
    """In a fresh process: prepare the workspace; print JSON with peak RSS before/after."""
    import tensorflow_datasets  # noqa: F401  (imports count in the baseline, not the growth)

    from tiefjax.data.crops import PrepareConfig
    from tiefjax.prepare import prepare
    from tiefjax.workspace import Workspace

    ws = Workspace(root / "ws")
    before = _status_mb("VmRSS")
    reset = _reset_hwm()
    t = time.perf_counter()
    summary = prepare(ws, PrepareConfig())
    seconds = time.perf_counter() - t
    counts = summary.counts
    files = [p for p in ws.datasets_dir.rglob("*") if p.is_file()]
    print(
        json.dumps(
            {
                "n": summary.images,
                "crops": sum(counts["classification"][s]["total"] for s in ("train", "test")),
                "triplets": sum(counts["triplets"][s]["total"] for s in ("train", "test")),
                "rss_before_mb": before,
                "peak_rss_mb": _status_mb("VmHWM") if reset else _rss_mb(),
                "getrusage_maxrss_mb": _rss_mb(),
                "seconds": seconds,
                "dataset_mb": sum(p.stat().st_size for p in files) / 2**20,
            }
        )
    )


def memory(sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="bench-prepare-mem-"))
        try:
            make_catalog(n, root)
            proc = subprocess.run(
                [sys.executable, __file__, "--prepare-child", str(root)],
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="demo catalog photos (speed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--memory", type=int, nargs="*", default=[250, 2000], help="catalog sizes for peak RSS"
    )
    parser.add_argument("--prepare-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_child is not None:
        prepare_child(args.prepare_child)
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{datetime.date.today()}")  # fmt: skip
    s = speed(args.n, args.rounds)
    print(f"\ndemo catalog: {s['photos']} photos, {s['crops']} classification crops")
    print(f"  decode only (full photo, same pool)   {s['decode_img_s']:8.1f} img/s")
    print(
        f"  prepare (3 sets, end to end)         {s['prepare_crops_s']:8.1f} crops/s "
        f"({s['prepare_img_s']:.1f} img/s)"
    )
    print(f"  prepare crop stage only              {s['crop_stage_crops_s']:8.1f} crops/s")
    print(f"  stored crop size                     {s['jpeg_kb_per_crop']:8.1f} KB (JPEG q95)")
    print("load one record, random order:")
    print(f"  bytes in the record (shipped)        {s['load_bytes_rec_s']:8.1f} rec/s")
    print(f"  (photo, window) cut at load time     {s['load_path_rec_s']:8.1f} rec/s")
    print(f"  geometry-only write side (no pixels) {s['geometry_only_crops_s']:8.1f} crops/s")
    rows = memory(args.memory) if args.memory else []
    if rows:
        print("\npeak RSS while preparing a synthetic catalog (fresh process each):")
        for r in rows:
            print(
                f"  {r['n']:6d} photos {r['crops']:7d} crops {r['triplets']:6d} triplets: "
                f"peak {r['peak_rss_mb']:6.0f} MB (after imports {r['rss_before_mb']:.0f} MB), "
                f"{r['seconds']:.0f} s, datasets {r['dataset_mb']:.0f} MB"
            )
    print("\n```json")
    print(json.dumps({"speed": s, "memory": rows}, indent=1))
    print("```")


if __name__ == "__main__":
    main()
