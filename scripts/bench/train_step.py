"""Head training steps per second: JAX on 1 vs 4 (forced) CPU devices vs the same step in PyTorch.

One step = forward + backward + AdamW update of a head on a batch of 11x11x256 encoder feature
maps (the frozen-encoder training path), same head, same batch size, in every variant. Each
variant runs in its own subprocess (device count is fixed at JAX start-up), one after the other
and then again in reverse order to spread the noise of a shared machine.

    .venv/bin/python scripts/bench/train_step.py [--head classifier|regressor|ranking]
        [--batch 64] [--steps 30] [--json out.json]

Forced CPU devices split the same cores, so on a CPU "4 devices" measures the cost of the data
parallel machinery (sharding, all-reduce), not a speed-up; on N real accelerators the same code
runs N shards at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def jax_train_steps(head: str, batch: int, steps: int, warmup: int) -> dict:
    """Steps per second of ``head`` on a global ``batch`` over every device of every process
    (each process supplies its share of the rows)."""
    import jax
    import numpy as np

    from tiefjax.train.loop import make_step_fns
    from tiefjax.train.mesh import make_mesh
    from tiefjax.train.tasks import CONFIGS, make_task

    cfg = CONFIGS[head](batch_size=batch, steps=10_000)
    rng = np.random.default_rng(0)
    local = batch // jax.process_count()
    feats = lambda: np.abs(rng.normal(size=(local, 11, 11, 256))).astype(np.float32)  # noqa: E731
    if head == "ranking":
        host = {"reference": feats(), "positive": feats(), "negative": feats()}
    else:
        host = {"image": feats(), "label": rng.integers(0, 2, local).astype(np.int32)}
        host["target"] = rng.normal(size=(local, 4)).astype(np.float32)
    stats = (np.zeros(4, np.float32), np.ones(4, np.float32))
    task = make_task(head, cfg, regression_stats=stats)
    host = {k: v for k, v in host.items() if k in task.keys}
    mesh = make_mesh()
    fns = make_step_fns(task, cfg, mesh)
    state = fns.init()
    b = mesh.put_batch(host, batch)
    for _ in range(warmup):
        state, m = fns.train_step(state, b)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = fns.train_step(state, b)
    jax.block_until_ready((state, m))
    dt = time.perf_counter() - t
    return {"variant": f"jax {jax.device_count()} device(s)", "steps_per_s": steps / dt}


def _torch_worker(head: str, batch: int, steps: int, warmup: int, linear: bool = False) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    x = torch.randn(batch, 256, 11, 11).abs().contiguous(memory_format=torch.channels_last)
    first = lambda n: (  # noqa: E731 - the 11x11 window layer: a conv, or a Linear on flat maps
        nn.Sequential(nn.Flatten(), nn.Linear(256 * 121, n), nn.Unflatten(1, (n, 1, 1)))
        if linear
        else nn.Conv2d(256, n, 11)
    )
    if head == "classifier":
        net = nn.Sequential(
            first(512),
            nn.ReLU(),
            nn.Conv2d(512, 256, 1),
            nn.ReLU(),
            nn.Conv2d(256, 2, 1),
        )
        y = torch.randint(0, 2, (batch,))
        loss_fn = lambda: nn.functional.cross_entropy(net(x).flatten(1), y)  # noqa: E731
        lr, wd = 1e-3, 1e-4
    elif head == "regressor":
        h, h2 = 128, 64  # RegressorConfig defaults; four nets as one conv + grouped 1x1 convs
        net = nn.Sequential(
            first(4 * h),
            nn.ReLU(),
            nn.Conv2d(4 * h, 4 * h2, 1, groups=4),
            nn.ReLU(),
            nn.Conv2d(4 * h2, 4, 1, groups=4),
        )
        t = torch.randn(batch, 4)
        loss_fn = lambda: nn.functional.mse_loss(net(x).flatten(1), t)  # noqa: E731
        lr, wd = 1e-3, 1e-4
    else:
        proj = nn.Conv2d(256, 256, 1)
        with torch.no_grad():
            proj.weight.copy_(torch.eye(256).view(256, 256, 1, 1))
            proj.bias.zero_()
        net = proj
        xs = [torch.randn(batch, 256, 11, 11).abs() for _ in range(3)]

        def embed(a: torch.Tensor) -> torch.Tensor:
            a = nn.functional.normalize(a, dim=1)
            return nn.functional.normalize(net(a).flatten(1), dim=1)

        def loss_fn() -> torch.Tensor:
            e = embed(torch.cat(xs))
            r, p, n = e.chunk(3)
            return torch.relu(0.1 - ((r * p).sum(1) - (r * n).sum(1))).mean()

        lr, wd = 1e-4, 0.0
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    how = "1x1 Conv2d" if head == "ranking" else ("Linear" if linear else "Conv2d 11x11")
    return {"variant": f"pytorch {torch.__version__}, {how}", "steps_per_s": steps / dt}


def _run(kind: str, devices: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--head",
        args.head,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head", default="classifier", choices=("classifier", "regressor", "ranking"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", choices=("jax", "torch", "torch-linear"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        a = (args.head, args.batch, args.steps, args.warmup)
        if args.worker == "jax":
            print(json.dumps(jax_train_steps(*a)))
        else:
            print(json.dumps(_torch_worker(*a, linear=args.worker == "torch-linear")))
        return
    plan = [("jax", 1), ("jax", 4), ("torch", 1)]
    if args.head != "ranking":
        plan.append(("torch-linear", 1))
    runs: dict[str, list[float]] = {}
    for kind, devices in plan + plan[::-1]:
        r = _run(kind, devices, args)
        runs.setdefault(r["variant"], []).append(r["steps_per_s"])
    load = os.getloadavg()[0]
    print(
        f"head {args.head}, batch {args.batch}, {args.steps} timed steps, "
        f"{os.cpu_count()} CPUs, load average {load:.1f}"
    )
    print(f"{'variant':40s} {'steps/s (best of 2)':>20s} {'examples/s':>12s}")
    results = []
    for name, vals in runs.items():
        best = max(vals)
        results.append({"variant": name, "steps_per_s": best, "all": vals})
        print(f"{name:40s} {best:20.2f} {best * args.batch:12.0f}")
    if args.json:
        args.json.write_text(
            json.dumps({"head": args.head, "batch": args.batch, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
