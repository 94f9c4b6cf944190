#!/usr/bin/env python
"""Encoder throughput: tiefjax's Flax AlexNet encoder vs the same network in PyTorch.

    .venv/bin/python scripts/bench/encoder.py                 # CPU, batch 32, fp32
    .venv/bin/python scripts/bench/encoder.py --variants all  # also plain jax.jit backends
    .venv/bin/python scripts/bench/encoder.py --gpu           # GPU, bf16 (when one exists)

Both sides get the same random weights (checked to give the same feature map), the same uint8
batch (normalised inside the timed call on both sides), the same threads; compilation and
warm-up are excluded. Rounds interleave the contestants (order alternating) so a busy neighbour
hurts both alike; rounds repeat until no best-of or median moved more than ``--tolerance``
over the last three rounds (or ``--max-seconds`` pass). Reports best-of-N (what the machine
can do) and median (what you get), the ratio to PyTorch, and a roofline: the image rate the
encoder's FLOPs would allow at the machine's measured matmul rate, and the fraction of it each
side reaches. Ends with a markdown snippet for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# before NumPy, as `tiefjax` runs: sets OpenBLAS's thread timeout (see tiefjax/__init__.py)
import tiefjax  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402


def conv_flops(size: int) -> float:
    """Multiply-adds x 2 of the five convolutions for a ``size`` x ``size`` image."""
    from tiefjax.nets.alexnet import CONV_LAYERS

    flops, h, cin = 0.0, size, 3
    for i, (_, cout, k, stride, pad, pool) in enumerate(CONV_LAYERS):
        h = (h + 2 * pad - k) // stride + 1
        flops += 2.0 * h * h * cout * cin * k * k
        cin = cout
        if pool:
            h = (h - 3) // (1 if i == len(CONV_LAYERS) - 1 else 2) + 1
    return flops


def peak_probes(gpu: bool) -> dict[str, tuple[Callable[[], object], float]]:
    """Large matmul-shaped kernels (name -> (run once, FLOPs)) that show the machine's peak.

    Several libraries, because BLAS builds differ a lot on one CPU (a generic AVX2 sgemm
    reaches a fraction of an AVX-512 machine, oneDNN's JIT kernels much more). They run inside
    the interleaved rounds, so they meet the same neighbours as the encoders.
    """
    import jax
    import jax.numpy as jnp
    import torch

    n = 8192 if gpu else 2048
    dtype = jnp.bfloat16 if gpu else jnp.float32
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    probes: dict[str, tuple[Callable[[], object], float]] = {
        "jax matmul": (lambda: mm(a).block_until_ready(), 2.0 * n**3),
    }
    if gpu:
        return probes
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 32, 64, n), dtype)  # 2048 pixels
    conv = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    probes["jax 1x1 conv"] = (lambda: conv(x, a[None, None]).block_until_ready(), 2.0 * n**3)
    b = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    probes["numpy matmul"] = (lambda: b @ b, 2.0 * n**3)
    t = torch.from_numpy(b.copy())
    probes["torch matmul"] = (lambda: t @ t, 2.0 * n**3)
    tx = torch.randn(1, n, 32, 64).contiguous(memory_format=torch.channels_last)
    tconv = torch.nn.Conv2d(n, n, 1, bias=False).eval().to(memory_format=torch.channels_last)

    def torch_conv() -> object:
        with torch.inference_mode():
            return tconv(tx)

    probes["torch 1x1 conv (oneDNN)"] = (torch_conv, 2.0 * n**3)
    return probes


def torch_alexnet_features():
    """torchvision AlexNet ``features`` with TiefVision's last pool stride 1."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 1),
    )


def build(args: argparse.Namespace) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """The contestants: name -> zero-arg callable running one batch to completion."""
    import jax
    import jax.numpy as jnp
    import torch

    from tiefjax.images import IMAGENET_MEAN, IMAGENET_STD
    from tiefjax.models import EIGEN_CONV_OPTIONS, _whole, make_encoder
    from tiefjax.nets.port import state_dict_to_flax

    torch.manual_seed(0)
    device = "cuda" if args.gpu else "cpu"
    tdtype = torch.bfloat16 if args.gpu else torch.float32
    model = torch_alexnet_features().eval()
    sd = {f"features.{k}": v.numpy() for k, v in model.state_dict().items()}
    params = jax.device_put(state_dict_to_flax(sd)["encoder"])
    model = model.to(device=device, dtype=tdtype, memory_format=torch.channels_last)
    pixels = np.random.default_rng(0).integers(
        0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8
    )
    xj = jax.device_put(pixels)
    # NHWC uint8 viewed as NCHW: a channels_last tensor, no copy
    xt = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN * 255, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD * 255, device=device).view(1, 3, 1, 1)

    def run_torch() -> object:
        with torch.inference_mode():
            x = ((xt.float() - mean) / std).to(tdtype).contiguous(memory_format=torch.channels_last)
            y = model(x)
            if args.gpu:
                torch.cuda.synchronize()
            return y

    jdtype = jnp.bfloat16 if args.gpu else jnp.float32
    tief = make_encoder(params, jdtype, cap=args.batch)
    fns: dict[str, Callable[[], object]] = {
        "tiefjax": lambda: tief(pixels),
        "pytorch": run_torch,
    }
    labels = {
        "tiefjax": "tiefjax make_encoder ("
        + ("bf16, one jit" if args.gpu else "fp32, Eigen convolutions, 8-image chunks")
        + ")",
        "pytorch": f"PyTorch {torch.__version__} channels_last ({'bf16' if args.gpu else 'fp32'})",
    }
    if args.variants == "all" and not args.gpu:
        plain = jax.jit(lambda p, x: _whole(p, x, jnp.float32))
        eigen = jax.jit(lambda p, x: _whole(p, x, jnp.float32), compiler_options=EIGEN_CONV_OPTIONS)
        fns["jit-ynn"] = lambda: plain(params, xj).block_until_ready()
        fns["jit-eigen"] = lambda: eigen(params, xj).block_until_ready()
        labels["jit-ynn"] = "jax.jit default (YNNPACK convolutions)"
        labels["jit-eigen"] = "jax.jit, XLA Eigen convolutions, whole batch at once"
        bf16 = make_encoder(params, jnp.bfloat16, cap=args.batch)
        fns["tiefjax-bf16"] = lambda: bf16(pixels)
        labels["tiefjax-bf16"] = "tiefjax make_encoder, bf16 compute"

    # same numbers on both sides (fp32 only; bf16 differs by rounding)
    want = run_torch().float().cpu().numpy().transpose(0, 2, 3, 1)
    got = np.asarray(tief(pixels), np.float32)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"feature map {got.shape}, max relative difference to PyTorch {err:.1e}")
    if not args.gpu and err > 1e-4:
        raise SystemExit("tiefjax and PyTorch disagree; benchmark aborted")
    return fns, labels


def stable(history: dict[str, list[float]], recent: int, tolerance: float) -> bool:
    """Neither the best nor the median of any contestant moved by more than ``tolerance`` when
    the last ``recent`` measurements were added."""
    for times in history.values():
        if len(times) < 2 * recent:
            return False
        before, now = times[:-recent], times
        for stat in (min, statistics.median):
            if abs(stat(now) - stat(before)) / stat(before) > tolerance:
                return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--gpu", action="store_true", help="run on the GPU in bf16 (batch 256)")
    ap.add_argument("--variants", choices=("main", "all"), default="main")
    ap.add_argument("--reps", type=int, default=3, help="batches per contestant per round")
    ap.add_argument("--min-rounds", type=int, default=6)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    args = ap.parse_args()
    if args.gpu and args.batch == 32:
        args.batch = 256

    import torch

    torch.set_num_threads(args.threads)
    import jax

    if args.gpu and jax.default_backend() != "gpu":
        raise SystemExit("--gpu: JAX sees no GPU here (install tiefjax[cuda])")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: this PyTorch build has no CUDA")

    load = os.getloadavg()
    fns, labels = build(args)
    probes = peak_probes(args.gpu)
    for f in list(fns.values()) + [p[0] for p in probes.values()]:  # compile + warm up, excluded
        for _ in range(2):
            f()

    names = list(fns)
    history: dict[str, list[float]] = {name: [] for name in names}
    probe_times: dict[str, list[float]] = {name: [] for name in probes}
    start = time.perf_counter()
    rounds = 0
    while rounds < args.max_rounds:
        order = names if rounds % 2 == 0 else names[::-1]
        for name in order:
            for _ in range(args.reps):
                t = time.perf_counter()
                fns[name]()
                history[name].append(time.perf_counter() - t)
        for name, (fn, _) in probes.items():
            t = time.perf_counter()
            fn()
            probe_times[name].append(time.perf_counter() - t)
        rounds += 1
        if rounds >= args.min_rounds and stable(history, 3 * args.reps, args.tolerance):
            break
        if time.perf_counter() - start > args.max_seconds:
            print(f"stopped after {args.max_seconds:.0f} s without stable figures (busy machine?)")
            break

    flops = conv_flops(args.size)
    gflops = {
        n: (probes[n][1] / min(t) / 1e9, probes[n][1] / statistics.median(t) / 1e9)
        for n, t in probe_times.items()
    }
    peak_best = max(g[0] for g in gflops.values())
    peak_med = max(g[1] for g in gflops.values())
    bound, bound_med = peak_best * 1e9 / flops, peak_med * 1e9 / flops
    rate = {n: (args.batch / min(t), args.batch / statistics.median(t)) for n, t in history.items()}
    ref_best, ref_med = rate["pytorch"]
    load_after = os.getloadavg()

    device = jax.devices()[0].device_kind if args.gpu else platform.processor() or "cpu"
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        device,
    )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    import jaxlib

    machine = (
        f"{jax.devices()[0].device_kind}"
        if args.gpu
        else f"{cpu_model}, {args.threads} threads ({os.cpu_count()} cores visible)"
    )
    print()
    print(f"### Encoder throughput ({'GPU bf16' if args.gpu else 'CPU fp32'}), {when}")
    print()
    print(
        f"Machine: {machine}; jax/jaxlib {jax.__version__}/{jaxlib.__version__}, "
        f"torch {torch.__version__}. Batch {args.batch}, {args.size}x{args.size}, "
        f"{rounds} interleaved rounds x {args.reps} batches, warm-up excluded. "
        f"Load average before/after: {load[0]:.1f}/{load_after[0]:.1f}."
    )
    print()
    print(
        "| encoder | best img/s | median img/s | vs PyTorch (best / median) "
        "| of roofline (best / median) |"
    )
    print("|---|---:|---:|---:|---:|")
    for n in names:
        best, med = rate[n]
        print(
            f"| {labels[n]} | {best:.1f} | {med:.1f} | {best / ref_best:.2f}x / "
            f"{med / ref_med:.2f}x | {best / bound:.0%} / {med / bound_med:.0%} |"
        )
    print()
    peaks = ", ".join(f"{k} {v[0]:.0f}" for k, v in gflops.items())
    print(
        f"Roofline: {flops / 1e9:.2f} GFLOP per image (five convolutions). Best matmul-shaped "
        f"rate measured in the same rounds: {peak_best:.0f} GFLOP/s ({peaks}; median "
        f"{peak_med:.0f}) -> at most {bound:.0f} img/s (median {bound_med:.0f})."
        + (
            " Above 100% means the convolution kernels beat every matmul probed here."
            if max(r[0] for r in rate.values()) > bound
            else ""
        )
    )
    print()
    print(
        "Command: `.venv/bin/python scripts/bench/encoder.py"
        + (" --gpu" if args.gpu else "")
        + (" --variants all" if args.variants == "all" else "")
        + "`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
