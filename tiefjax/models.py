"""The workspace's encoder: ported ImageNet weights or a seeded random init, and a fast encode fn.

Every command that encodes images calls :func:`load_encoder`: the encoder ``tiefjax pretrain``
left (``train/pretrain``), else ported ImageNet weights, else a seeded random init (seed 0),
which it says once on stderr, so nobody mistakes random features for ImageNet ones.

Speed on CPU: :func:`make_encoder` compiles with XLA's own (Eigen) convolutions instead of
the default YNNPACK ones and runs a batch a few images at a time so activations stay in cache
(see docs/benchmarks.md and scripts/bench/encoder.py). It runs on every local device
(:class:`tiefjax.inference.ShardedApply`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp

from tiefjax.errors import InvalidInput
from tiefjax.images import normalize
from tiefjax.inference import ShardedApply
from tiefjax.nets.alexnet import AlexNetEncoder, ImageNetHead, apply_params, init_encoder_params
from tiefjax.nets.port import ENCODER_DIR, HEAD_DIR, META_NAME
from tiefjax.settings import setting
from tiefjax.workspace import Workspace

RANDOM_SEED = 0
#: XLA CPU option that turns off YNNPACK fusions, leaving convolutions to XLA's Eigen kernels.
EIGEN_CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
#: Images per step of the CPU encoder (measured on a 2-core AVX-512 EPYC: 4..16 alike, 32 slower).
CPU_CHUNK = 8
_warned: set[str] = set()

Source = Literal["imagenet", "random", "pretrained"]
#: ``tiefjax pretrain``'s folder under ``train/``; its final encoder replaces the base one
PRETRAIN_TASK = "pretrain"
EncodeFn = Callable[[Any, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class EncoderWeights:
    """Encoder params plus where they came from; ``imagenet_head`` only when asked for."""

    params: Any
    source: Source
    imagenet_head: Any = None


def on_device(target: Any) -> Any:
    """Every leaf's shape and dtype on this process's first device, as an orbax restore target.

    Without a placement orbax restores NumPy arrays, and every jitted call then copies them to
    the device again (95 MB of trained heads per locate call: 3x its time on the CPU).
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), target)


def _restore(path: Any, target: Any) -> Any:
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path, on_device(target))
    except Exception as err:
        raise InvalidInput(
            f"{path} could not be read ({err.__class__.__name__}: {str(err)[:200]}); "
            "re-run `tiefjax port WORKSPACE alexnet.pth`"
        ) from err


def _head_target() -> Any:
    features = jax.ShapeDtypeStruct((1, 11, 11, 256), jnp.float32)
    shapes = jax.eval_shape(lambda f: ImageNetHead().init(jax.random.PRNGKey(0), f), features)
    return shapes["params"]


def load_encoder(
    ws: Workspace,
    announce: bool = True,
    with_imagenet_head: bool = False,
    pretrained: bool = True,
) -> EncoderWeights:
    """The encoder params of ``ws``: the pretrained encoder (unless not ``pretrained``), else
    ported ImageNet weights, else a seeded random init.

    Only a finalised checkpoint at ``models/encoder`` counts; orbax's unfinished temporary
    folders are never read. ``announce`` prints the random-init warning (once per workspace and
    process). ``with_imagenet_head`` also restores the 1000-class head when it was ported.
    """
    found = _pretrained(ws) if pretrained and not with_imagenet_head else None
    if found is not None:
        return EncoderWeights(found, "pretrained")
    path = ws.models_dir / ENCODER_DIR
    for _ in range(20):  # a running `tiefjax port` swaps old for new between two renames
        if path.is_dir() or not any(ws.models_dir.glob(f".{ENCODER_DIR}.old-*")):
            break
        time.sleep(0.05)
    if not path.is_dir():
        if announce and str(ws.root) not in _warned:
            _warned.add(str(ws.root))
            print(
                f"tiefjax: warning: running without ImageNet weights (random encoder, seed "
                f"{RANDOM_SEED}) - features and results will not be meaningful. Get torchvision's "
                f"AlexNet weights and use `tiefjax port {ws.root} alexnet.pth`.",
                file=sys.stderr,
            )
        return EncoderWeights(init_encoder_params(RANDOM_SEED), "random")
    target = jax.eval_shape(lambda: init_encoder_params(RANDOM_SEED))
    params = _restore(path, target)
    head = None
    if with_imagenet_head and (ws.models_dir / HEAD_DIR).is_dir():
        head = _restore(ws.models_dir / HEAD_DIR, _head_target())
    return EncoderWeights(params, "imagenet", head)


def pretrained_path(ws: Workspace) -> Path | None:
    """The finished pretrained encoder's checkpoint, or None (never pretrained, or discarded)."""
    final = ws.train_dir(PRETRAIN_TASK) / "final.json"
    try:
        name = json.loads(final.read_text(encoding="utf-8"))["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = final.parent / str(name)
    return path if path.is_dir() else None


def _pretrained(ws: Workspace) -> Any | None:
    path = pretrained_path(ws)
    if path is None:
        return None
    target = {"encoder": jax.eval_shape(lambda: init_encoder_params(RANDOM_SEED))}
    try:
        return _restore(path, target)["encoder"]
    except InvalidInput as err:
        raise InvalidInput(
            f"the pretrained encoder {path} could not be read; run `tiefjax pretrain "
            f"{ws.root} --discard` (or pretrain again with --reset)"
        ) from err


def encoder_metadata(ws: Workspace) -> dict[str, Any]:
    """``models/encoder.json`` (empty when nothing was ported)."""
    path = ws.models_dir / META_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _whole(params: Any, images: jax.Array, dtype: Any) -> jax.Array:
    fmap = apply_params(AlexNetEncoder(dtype=dtype), params, normalize(images))
    return fmap.astype(jnp.float32)


def _in_chunks(params: Any, images: jax.Array, dtype: Any) -> jax.Array:
    """:func:`_whole` over ``CPU_CHUNK`` images at a time, in one program (``lax.map``)."""

    def one(image: jax.Array) -> jax.Array:
        return _whole(params, image[None], dtype)[0]

    return jax.lax.map(one, images, batch_size=CPU_CHUNK)


def encoder_program(dtype: Any = jnp.float32, mirror: bool = False) -> EncodeFn:
    """The per-device encoder ``fn(params, uint8 NHWC batch) -> float32 (B, h, w, 256)`` maps;
    ``mirror``: the mirror-invariant maps of :func:`_mirror_invariant` (``[index] mirror``).

    Normalisation (ImageNet mean/std) happens on the device, so callers ship uint8. ``dtype``
    is the compute dtype (parameters stay float32, maps come out float32). On the CPU a batch
    runs ``CPU_CHUNK`` images at a time inside the one program: a chunk's activations stay in
    cache, where a whole batch of 32 spills to memory (docs/benchmarks.md); chunking changes
    nothing but the speed.
    """
    cpu = jax.default_backend() == "cpu"
    program = functools.partial(_in_chunks if cpu else _whole, dtype=jnp.dtype(dtype))
    return _mirror_invariant(program) if mirror else program


def _mirror_invariant(program: EncodeFn) -> EncodeFn:
    """``n(n(f(x)) + n(f(mirror(x))))`` (``n``: per-location L2 normalisation): the same maps
    for a photo and its mirror image, at twice the encoding cost. Both run as one batch."""
    from tiefjax.nets.heads import normalize_locations

    def run(params: Any, images: jax.Array) -> jax.Array:
        both = program(params, jnp.concatenate([images, images[:, :, ::-1]]))
        plain, mirrored = jnp.split(both, 2)
        return normalize_locations(normalize_locations(plain) + normalize_locations(mirrored))

    return run


DTYPE_VAR = "TIEFJAX_DTYPE"
DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """Settings of ``[compute]``."""

    dtype: str = setting(
        "auto",
        "encoder compute dtype: auto = bfloat16 on GPU/TPU, float32 on the CPU; float32 or "
        "bfloat16 force one (parameters and stored descriptors stay float32)",
    )

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InvalidInput(f"[compute] dtype must be one of {DTYPES}, not {self.dtype!r}")


def resolve_dtype(name: str) -> Any:
    """``auto`` -> bfloat16 on accelerators, float32 on the CPU (where XLA's bf16 convolutions
    are slower, docs/benchmarks.md); other names as they are."""
    if name not in DTYPES:
        raise InvalidInput(f"compute dtype must be one of {DTYPES}, not {name!r}")
    if name == "auto":
        name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return jnp.dtype(name)


def compute_dtype(ws: Workspace) -> Any:
    """The encoder's compute dtype for ``ws``: ``TIEFJAX_DTYPE`` (the command line's
    ``--dtype``) over ``[compute] dtype``."""
    return resolve_dtype(os.environ.get(DTYPE_VAR) or ws.section("compute", ComputeConfig).dtype)


def compiler_options() -> dict[str, Any] | None:
    """XLA options for programs with convolutions: on the CPU, XLA's Eigen convolutions,
    faster than the default YNNPACK ones on both machines measured (also for the 11x11 head
    layers, scripts/bench/locate.py)."""
    return EIGEN_CONV_OPTIONS if jax.default_backend() == "cpu" else None


def make_encoder(
    params: Any, dtype: Any = jnp.float32, cap: int = 32, mirror: bool = False
) -> ShardedApply:
    """The encoder of ``params`` over every local device: ``encoder(uint8 batch) -> maps``."""
    return ShardedApply(
        encoder_program(dtype, mirror), params, cap=cap, compiler_options=compiler_options()
    )


@functools.cache
def _head_fn() -> Callable[[Any, jax.Array], jax.Array]:
    return jax.jit(lambda p, f: ImageNetHead().apply({"params": p}, f))


def imagenet_logits(head_params: Any, features: jax.Array) -> jax.Array:
    """1000 ImageNet logits from 224x224 feature maps ``(B, 11, 11, 256)``."""
    return _head_fn()(head_params, features)
