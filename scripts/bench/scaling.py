"""Data-parallel scaling: catalog encoding and head training steps on 1 device, 4 forced devices
in one process, and 2 processes x 2 forced devices (JAX's coordinator on 127.0.0.1, gloo).

    .venv/bin/python scripts/bench/scaling.py [--images 256] [--steps 20] [--rounds 2]

Catalog encoding is :class:`tiefjax.index.encode.FeatureEncoder` (the one inference path,
batches of 32 windows split over the local devices); with several processes each encodes its
half and the time is the slowest process's, between two barriers. A training step is the
classifier head's forward + backward + AdamW on a global batch of 64 feature maps, sharded over
every device of every process. On the CPU forced devices share the same cores, so the ratios
measure what sharding costs (target: 4 devices >= 0.85x one device); on N accelerators the same
code runs N shards at once. Variants run one after the other, then again in reverse order.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
VARIANTS = {"1 device": (1, 1), "4 devices, 1 process": (1, 4), "2 processes x 2 devices": (2, 2)}


def _worker(images: int, steps: int) -> dict:
    from tiefjax import distributed

    distributed.start()
    import numpy as np
    from train_step import jax_train_steps

    from tiefjax.index.encode import FeatureEncoder
    from tiefjax.nets.alexnet import init_encoder_params

    rng = np.random.default_rng(0)
    windows = distributed.shard(list(rng.integers(0, 256, (images, 224, 224, 3), np.uint8)))
    windows = np.stack(windows)
    encoder = FeatureEncoder(init_encoder_params(0), "bench", batch_size=32)
    encoder(windows[:32])  # compile
    distributed.barrier("encode-start")
    t = time.perf_counter()
    encoder(windows)
    distributed.barrier("encode-end")
    encode_s = time.perf_counter() - t

    trained = jax_train_steps("classifier", batch=64, steps=steps, warmup=3)
    return {"images_per_s": images / encode_s, "steps_per_s": trained["steps_per_s"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(processes: int, devices: int, args: argparse.Namespace) -> dict:
    port = _free_port()
    procs = []
    for i in range(processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        if processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(i),
            )
        cmd = [sys.executable, __file__, "--worker", "--images", str(args.images)]
        cmd += ["--steps", str(args.steps)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outs = [proc.communicate(timeout=1200)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker failed ({processes} x {devices})")
    return json.loads(outs[0].strip().splitlines()[-1])  # process 0 (timed between barriers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.images, args.steps)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            runs[name].append(_run(*VARIANTS[name], args))
    best = {n: {k: max(x[k] for x in v) for k in v[0]} for n, v in runs.items()}
    base = best["1 device"]
    print(f"catalog encoding ({args.images} windows) and classifier training steps (batch 64),")
    print(f"best of {args.rounds} runs each; ratios against 1 device on the same cores")
    print(f"{'variant':<26}{'encode img/s':>14}{'ratio':>8}{'train steps/s':>15}{'ratio':>8}")
    for name, b in best.items():
        enc, step = b["images_per_s"], b["steps_per_s"]
        print(
            f"{name:<26}{enc:>14.1f}{enc / base['images_per_s']:>8.2f}"
            f"{step:>15.1f}{step / base['steps_per_s']:>8.2f}"
        )


if __name__ == "__main__":
    main()
