#!/usr/bin/env python
"""Catalog encoding benchmark: end-to-end img/s of `encode_catalog` vs its two parts.

Measured in one run on the same photos: decode-only (JPEG draft decode + resize to 224 in the
pipeline's worker threads), encoder-only (jitted AlexNet on ready uint8 batches, fixed batch
size) and end-to-end (the real pipeline: decode threads overlapped with the encoder, features
written to the memory-mapped array). On a CPU both parts share the cores, so the best a pipeline
can do is 1/(1/encode + 1/decode); on an accelerator it is min(encode, decode). Target: >= 0.9
of that bound (the pipeline adds no waiting of its own). Each rate is the best of 3 rounds in
which the three measurements take turns (the machine is shared).

    .venv/bin/python scripts/bench/encode_catalog.py [--n 320] [--out bench-encode.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402


def make_photos(folder: Path, n: int, size=(900, 600)) -> None:
    """JPEG photos of smooth backgrounds with a few shapes (compress like real photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        t = (xx / w * rng.random() + yy / h * rng.random())[..., None] / 2
        img = Image.fromarray((c0 * (1 - t) + c1 * t).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
            x1, y1 = x0 + int(rng.integers(50, 400)), y0 + int(rng.integers(50, 400))
            fill = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
        img = img.filter(ImageFilter.GaussianBlur(1))
        arr = np.asarray(img).astype(np.int16) + rng.integers(-8, 8, (h, w, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            folder / f"img{i:05d}.jpg", quality=90
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=320, help="photos (a multiple of the batch size)")
    ap.add_argument("--rounds", type=int, default=3, help="best of this many rounds each")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    load = os.getloadavg()[0]

    import jax

    from tiefjax.catalog import init_workspace
    from tiefjax.images import load_window, prefetch
    from tiefjax.index.config import IndexConfig
    from tiefjax.index.encode import Catalog, FeatureEncoder, encode_catalog
    from tiefjax.nets.alexnet import init_encoder_params
    from tiefjax.workspace import Workspace

    cfg = IndexConfig()
    tmp = Path(tempfile.mkdtemp(prefix="tiefjax-bench-encode-"))
    images = tmp / "images"
    make_photos(images, args.n)
    init_workspace(tmp / "ws", images)
    catalog = Catalog.read(Workspace(tmp / "ws"))
    files = sorted(images.glob("*.jpg"))

    def decode_only() -> float:  # the pipeline's decode function in its worker threads
        t0 = time.perf_counter()
        for _, v in prefetch(lambda p: load_window(p, None, 224), files, cfg.workers):
            assert not isinstance(v, BaseException)
        return len(files) / (time.perf_counter() - t0)

    windows = np.stack([v for _, v in prefetch(lambda p: load_window(p, None, 224), files)])
    enc = FeatureEncoder(init_encoder_params(0), "bench", cfg.batch_size, "random")
    enc(windows[: cfg.batch_size])  # compile once, outside the timings

    def encoder_only() -> float:  # fixed-size batches of ready windows, as the pipeline runs
        t0 = time.perf_counter()
        enc(windows)
        return len(windows) / (time.perf_counter() - t0)

    runs = iter(range(1000))

    def end_to_end() -> float:  # the real pipeline, from files to the memory-mapped features
        out = tmp / f"out{next(runs)}"
        result = encode_catalog(catalog, out, enc, None, cfg, progress=False)
        assert not result.errors
        return result.images_per_second

    # rounds in which the three take turns: load from other processes hits them alike
    rates: dict[str, list[float]] = {"decode": [], "encode": [], "e2e": []}
    for _ in range(args.rounds):
        rates["decode"].append(decode_only())
        rates["encode"].append(encoder_only())
        rates["e2e"].append(end_to_end())
    decode_rate, encode_rate, e2e_rate = (max(rates[k]) for k in ("decode", "encode", "e2e"))
    cpu = jax.default_backend() == "cpu"
    bound = 1 / (1 / encode_rate + 1 / decode_rate) if cpu else min(encode_rate, decode_rate)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpu(s), "
        f"jax backend {jax.default_backend()}",
        "photos": len(files),
        "photo_size": "900x600 JPEG q90",
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "decode_only_img_s": round(decode_rate, 1),
        "encoder_only_img_s": round(encode_rate, 1),
        "bound_img_s": round(bound, 1),
        "bound_formula": "1/(1/encode+1/decode)" if cpu else "min(encode, decode)",
        "end_to_end_img_s": round(e2e_rate, 1),
        "fraction_of_bound": round(e2e_rate / bound, 3),
        "rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "load_average_at_start": load,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
