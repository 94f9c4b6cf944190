"""Fully convolutional box extraction vs crop-by-crop over the same windows, same photo.

    .venv/bin/python scripts/bench/locate.py [--rounds 5] [--width 600 --height 800]

The fully convolutional path runs the encoder once per scale and slides the heads over the
map; the crop-by-crop path cuts every 224x224 window (stride 16) out of the resized photo,
encodes the windows in batches of 32 and runs the heads on each 11x11 map. Heads have the sizes
`tiefjax train` gives them by default, randomly initialised (timing does not depend on
training). Compile time is excluded (one warm-up each).

Then many photos: ``locate_many`` over ``--batch`` photos of the same size (one encoder call
per scale, as a server micro-batch or an index build runs them) against a ``locate`` call per
photo, in interleaved rounds.

Last a phone photo (``--phone`` size JPEG): decode + locate with a full decode against the
draft decode tiefjax uses (JPEG DCT scaling to the locator's largest scale).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# before NumPy, as `tiefjax` runs: sets OpenBLAS's thread timeout (see tiefjax/__init__.py)
import tiefjax  # noqa: E402, F401

# isort: split
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tiefjax.images import load_rgb, load_rgb_scaled, resize_short_side  # noqa: E402
from tiefjax.locate import LocateConfig, Locator  # noqa: E402
from tiefjax.nets.alexnet import PATCH, STRIDE, WINDOW, init_encoder_params  # noqa: E402
from tiefjax.nets.heads import BoxRegressors, CropClassifier  # noqa: E402
from tiefjax.train.tasks import ClassifierConfig, RegressorConfig  # noqa: E402


def crop_by_crop(locator: Locator, img: Image.Image, config, batch=32) -> int:
    """Score the same windows as the locator, one encoder pass per window; returns #windows."""
    n = 0
    for short_side in config.short_sides:
        pixels = np.asarray(resize_short_side(img, short_side)[0])
        rows = (pixels.shape[0] - WINDOW) // STRIDE + 1
        cols = (pixels.shape[1] - WINDOW) // STRIDE + 1
        crops = [
            pixels[i * STRIDE : i * STRIDE + WINDOW, j * STRIDE : j * STRIDE + WINDOW]
            for i in range(rows)
            for j in range(cols)
        ]
        n += len(crops)
        for start in range(0, len(crops), batch):  # same compiled encoder + heads
            locator.score_maps(np.stack(crops[start : start + batch]))
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=600)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8, help="photos per locate_many call")
    parser.add_argument("--phone", default="4000x3000", help="phone photo size, WxH")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8))
    encoder_params = init_encoder_params(0)
    fmap = jnp.zeros((1, PATCH, PATCH, 256))
    # heads at the sizes `tiefjax train` gives them by default
    clf = CropClassifier(hidden=ClassifierConfig().hidden, hidden2=ClassifierConfig().hidden2)
    reg = BoxRegressors(hidden=RegressorConfig().hidden, hidden2=RegressorConfig().hidden2)
    heads = (
        (clf, clf.init(jax.random.PRNGKey(1), fmap)["params"]),
        (reg, reg.init(jax.random.PRNGKey(2), fmap)["params"]),
    )
    mean, std = np.zeros(4, np.float32), np.ones(4, np.float32)
    config = LocateConfig()
    locator = Locator(encoder_params, heads[0], heads[1], mean, std, config)

    locator.locate(img)  # warm-up / compile
    windows = crop_by_crop(locator, img, config)
    conv_times, crop_times = [], []
    for _ in range(args.rounds):  # interleaved rounds
        t = time.perf_counter()
        locator.locate(img)
        conv_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        crop_by_crop(locator, img, config)
        crop_times.append(time.perf_counter() - t)
    conv, crop = statistics.median(conv_times), statistics.median(crop_times)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, "
        f"jax {jax.__version__} {jax.default_backend()}"
    )
    print(f"photo {args.width}x{args.height}, scales {config.short_sides}, {windows} windows")
    print(f"fully convolutional: median {conv * 1000:.0f} ms (best {min(conv_times) * 1000:.0f})")
    print(f"crop by crop:        median {crop * 1000:.0f} ms (best {min(crop_times) * 1000:.0f})")
    print(f"speed-up: {crop / conv:.1f}x (target >= 10x)")

    photos = [
        Image.fromarray(rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8))
        for _ in range(args.batch)
    ]
    # [locate] batch_size is 1 on the CPU by default; measure batching as accelerators run it
    batched = Locator(encoder_params, heads[0], heads[1], mean, std, replace(config, batch_size=16))
    batched.locate_many(photos)  # warm-up / compile the batch shapes
    one_times, many_times = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for photo in photos:
            locator.locate(photo)
        one_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        batched.locate_many(photos)
        many_times.append(time.perf_counter() - t)
    one, many = statistics.median(one_times), statistics.median(many_times)
    print(f"{args.batch} photos, one locate call each: {args.batch / one:.1f} photos/s (median)")
    print(f"{args.batch} photos, one locate_many call: {args.batch / many:.1f} photos/s (median)")
    print(f"batched: {one / many:.2f}x")

    width, height = (int(v) for v in args.phone.split("x"))
    blocks = rng.integers(0, 255, (height // 40, width // 40, 3), dtype=np.uint8)
    buf = io.BytesIO()  # smooth content, sized like a camera JPEG
    Image.fromarray(blocks).resize((width, height), Image.Resampling.BICUBIC).save(buf, "JPEG")
    data = buf.getvalue()
    side = config.decode_short_side
    full_times, draft_times = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        locator.locate(load_rgb(data))
        full_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        img, scale = load_rgb_scaled(data, side)
        locator.locate(img).scaled(scale)
        draft_times.append(time.perf_counter() - t)
    full, draft = statistics.median(full_times), statistics.median(draft_times)
    print(f"{width}x{height} JPEG ({len(data) / 1e6:.1f} MB), decode + locate:")
    print(f"  full decode:  median {full * 1000:.0f} ms")
    print(f"  draft decode: median {draft * 1000:.0f} ms (decoded {img.width}x{img.height})")
    print(f"  speed-up: {full / draft:.2f}x")


if __name__ == "__main__":
    main()
