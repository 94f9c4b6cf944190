#!/usr/bin/env python3
"""Pretraining throughput: views per second through ``tiefjax pretrain``'s training step (forward
and backward of the whole encoder, AdamW), next to the frozen encoder's inference on the same
device in the same run, and the time of the input pipeline (decode + augment) per view.

    .venv/bin/python scripts/bench/pretrain.py [--batch 16] [--steps 6] [--objective descriptor]

The step is the loop's own (``make_step_fns`` on the pretrain task, data parallel over every
local device); the batch is random pixels, so only speed is measured. The views/s of the input
pipeline come from the demo catalog's photos (decoded, augmented, boxed, resized).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16, help="photos per step (two views each)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--objective", default="descriptor", choices=("descriptor", "pooled"))
    args = ap.parse_args()

    import jax
    import numpy as np

    from tiefjax.demo_catalog import make_demo_catalog
    from tiefjax.models import make_encoder
    from tiefjax.nets.alexnet import init_encoder_params
    from tiefjax.pretrain import PhotoViews, PretrainConfig, pretrain_task
    from tiefjax.train.loop import make_step_fns
    from tiefjax.train.mesh import make_mesh

    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), {jax.device_count()} device(s)")
    cfg = PretrainConfig(batch_size=args.batch, steps=10_000, objective=args.objective)
    params = init_encoder_params(0)
    mesh = make_mesh()
    fns = make_step_fns(pretrain_task(cfg, params), cfg, mesh)
    rng = np.random.default_rng(0)
    views = lambda: rng.integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)  # noqa: E731
    host = {"view1": views(), "view2": views(), "photo": np.arange(args.batch, dtype=np.int32)}
    batch = mesh.put_batch(host, args.batch)
    state = fns.init()
    state, m = fns.train_step(state, batch)  # compile
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(args.steps):
        state, m = fns.train_step(state, batch)
    jax.block_until_ready(m)
    train_s = (time.perf_counter() - t) / args.steps
    train_views = 2 * args.batch / train_s

    encode = make_encoder(params, cap=2 * args.batch)
    pixels = np.concatenate([host["view1"], host["view2"]])
    encode(pixels)  # compile
    t = time.perf_counter()
    for _ in range(args.steps):
        encode(pixels)
    infer_views = 2 * args.batch * args.steps / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_demo_catalog(Path(tmp) / "catalog", 32, 0)
        paths = [str(Path(tmp) / "catalog" / p.file) for p in manifest.photos]
        src = PhotoViews(paths, 64, cfg, trim=True)
        t = time.perf_counter()
        for i in range(32):
            src[i]
        pipeline_views = 64 / (time.perf_counter() - t)

    print(
        f"pretrain step ({args.objective}, {args.batch} photos = {2 * args.batch} views): "
        f"{train_s:.2f} s, {train_views:.1f} views/s"
    )
    print(f"frozen encoder inference, same views: {infer_views:.1f} views/s")
    print(f"training / inference throughput: {train_views / infer_views:.2f}x")
    print(
        f"input pipeline (decode, augment, box, resize), one thread: {pipeline_views:.1f} views/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
