"""``tiefjax pretrain``: self-supervised training of the AlexNet encoder on the catalog's photos.

Objective: SimCLR's NT-Xent (Chen et al. 2020) on two augmented views of each photo, the views
made by the transforms catalog copies undergo (:func:`tiefjax.augment.random_view`: crop,
mirror, scale, colour, JPEG, plain or textured padding, small rotations) and boxed the way the
index boxes a whole photo (:func:`tiefjax.images.whole_box`). Two heads are offered
(``[pretrain] objective``, compared in docs/design-notes.md):

- ``descriptor`` (default): the loss is taken on the very descriptor search uses, the flattened
  per-location-normalised 11x11x256 map, so pretraining optimises what is measured. Its only
  training-only parameter is the learnt temperature.
- ``pooled``: the SimCLR recipe, an MLP projection of the average-pooled map.

Negatives are the other photos of the global batch; views of the same photo drawn twice into one
batch are masked out rather than pushed apart. Nothing but the encoder is kept: the temperature
and projection are dropped, so the result has the plain AlexNet layout ``tiefjax port`` writes
and every later step (the heads' feature cache and training, locate, index, serve) loads it in
place of the ported or random weights (:func:`tiefjax.models.load_encoder`). It runs on the heads'
training loop: data parallel over every device and process, orbax checkpoints every
``checkpoint_every`` steps, a killed run resumes, ``metrics.jsonl`` and a progress bar. The
test metric ``copy_recall_at_1`` searches a held-out set of augmented views (other draws than
training's) among the originals of a sample of catalog photos.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from tiefjax import distributed
from tiefjax.augment import random_view
from tiefjax.errors import InvalidInput
from tiefjax.images import Box, clip_box, crop_resize, load_rgb_scaled, whole_box
from tiefjax.index.config import IndexConfig
from tiefjax.models import PRETRAIN_TASK, compute_dtype, load_encoder
from tiefjax.nets.alexnet import PATCH, WINDOW
from tiefjax.nets.heads import normalize_locations
from tiefjax.settings import setting, with_overrides
from tiefjax.train.features import params_fingerprint
from tiefjax.train.loop import run_loop
from tiefjax.train.tasks import Task, TrainConfig, encoder_features
from tiefjax.workspace import Workspace

OBJECTIVES = ("descriptor", "pooled")
HELD_OUT = 2**32 - 1  # seed word of the held-out views


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """Self-supervised pretraining of the encoder (section ``[pretrain]``)."""

    steps: int = setting(240, "optimiser steps in total (a re-run with more steps continues)")
    batch_size: int = setting(16, "photos per global batch (two views each); a multiple of devices")
    learning_rate: float = setting(1e-3, "peak learning rate of the projection head (pooled)")
    encoder_learning_rate: float = setting(2e-4, "peak learning rate of the encoder (AdamW)")
    warmup_steps: int = setting(20, "linear warm-up steps before the cosine decay")
    eval_every: int = setting(60, "measure copy recall on the held-out views every N steps")
    log_every: int = setting(10, "write averaged training metrics every N steps")
    checkpoint_every: int = setting(30, "save a checkpoint every N steps (and at the end)")
    objective: str = setting("descriptor", "'descriptor' (the search descriptor) or 'pooled'")
    temperature: float = setting(0.1, "initial NT-Xent temperature (learnt from there)")
    strength: float = setting(0.5, "chance of each augmentation in a view (mirror: always 0.5)")
    decode_short_side: int = setting(256, "photos are decoded with this shorter side")
    eval_photos: int = setting(64, "catalog photos whose held-out views measure copy recall")
    hidden: int = setting(512, "pooled objective: units of the projection's hidden layer")
    projection_dim: int = setting(128, "pooled objective: output units of the projection")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            choices, got = ", ".join(OBJECTIVES), self.objective
            raise InvalidInput(f"[pretrain] objective must be one of {choices}, not {got!r}")
        if not 0.0 <= self.strength <= 1.0 or self.temperature <= 0:
            raise InvalidInput("[pretrain] strength must lie in [0, 1] and temperature be > 0")
        if self.eval_photos < 2 or self.decode_short_side < WINDOW:
            raise InvalidInput(
                f"[pretrain] eval_photos must be at least 2 and decode_short_side at least {WINDOW}"
            )

    @classmethod
    def _tiny_extra(cls) -> dict[str, Any]:
        return {"batch_size": 4, "eval_photos": 4, "hidden": 16, "projection_dim": 8}


# -- data -----------------------------------------------------------------------------------------
def _window(img: Image.Image, trim: bool) -> np.ndarray:
    """A view as the encoder gets a whole photo: boxed like the index does, 224 x 224."""
    return np.asarray(crop_resize(img, whole_box(img, trim), (WINDOW, WINDOW)))


def _around(
    img: Image.Image, box: Box, scale: tuple[float, float], rng: np.random.Generator
) -> Image.Image:
    """The product box (photo pixels) cut from ``img`` (decoded at ``scale``), each side moved
    by up to 10 % of the box, so views also look the way the index sees a boxed product."""
    left, top, right, bottom = (
        box[0] / scale[0],
        box[1] / scale[1],
        box[2] / scale[0],
        box[3] / scale[1],
    )
    w, h = right - left, bottom - top
    dl, dt, dr, db = rng.uniform(-0.1, 0.1, 4) * np.array([w, h, w, h])
    moved = (left + dl, top + dt, right + dr, bottom + db)
    try:
        return img.crop(clip_box(moved, img.width, img.height))
    except InvalidInput:  # a box left over from an earlier version of the photo
        return img


class PhotoViews:
    """Example ``i``: two random views of photo ``i % n`` drawn with seed ``(seed, i)``, so each
    of the ``len`` examples (enough for the whole run: no draw repeats) has views of its own and
    a resumed run sees the same ones. A photo with a known product box (annotated or located)
    is cut to that box first half of the time (``boxes[i]``, photo pixels; None = unknown)."""

    def __init__(
        self,
        paths: Sequence[str],
        length: int,
        cfg: PretrainConfig,
        trim: bool,
        boxes: Sequence[Box | None] | None = None,
    ):
        self.paths, self.length, self.cfg, self.trim = list(paths), length, cfg, trim
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        photo = int(i) % len(self.paths)
        img, scale = load_rgb_scaled(self.paths[photo], self.cfg.decode_short_side)
        rng = np.random.default_rng((self.cfg.seed, int(i)))
        box = self.boxes[photo]
        if box is not None and rng.random() < 0.5:
            img = _around(img, box, scale, rng)
        views = [_window(random_view(img, rng, self.cfg.strength), self.trim) for _ in range(2)]
        return {"view1": views[0], "view2": views[1], "photo": np.asarray(photo, np.int32)}


class HeldOutViews:
    """The test split: for a seeded sample of photos, the photo itself and one augmented view
    drawn from seeds training never uses (training's are ``(seed, i)``, these three long)."""

    def __init__(self, paths: Sequence[str], cfg: PretrainConfig, trim: bool):
        rng = np.random.default_rng((cfg.seed, HELD_OUT, 0))
        pick = rng.permutation(len(paths))[: min(cfg.eval_photos, len(paths))]
        self.paths, self.cfg, self.trim = [paths[int(p)] for p in sorted(pick)], cfg, trim

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        img, _ = load_rgb_scaled(self.paths[i], self.cfg.decode_short_side)
        rng = np.random.default_rng((self.cfg.seed, HELD_OUT, int(i) + 1))
        view = random_view(img, rng, self.cfg.strength)
        return {
            "view1": _window(img, self.trim),
            "view2": _window(view, self.trim),
            "photo": np.asarray(i, np.int32),
        }


# -- the task -------------------------------------------------------------------------------------
class Projection(nn.Module):
    """SimCLR's projection head (pooled objective): Dense-ReLU-Dense."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out)(nn.relu(nn.Dense(self.hidden)(x)))


def descriptor(params: Mapping[str, Any], images: jax.Array) -> jax.Array:
    """The unsupervised search descriptor of uint8 windows (unit length)."""
    fmap = normalize_locations(encoder_features(params, images))
    return fmap.reshape(fmap.shape[0], -1) / PATCH


def nt_xent(
    z1: jax.Array, z2: jax.Array, photo: jax.Array, scale: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """NT-Xent over ``2n`` unit embeddings: each view's partner against every other photo's
    views (the same photo's other draws are masked); returns ``(loss, top-1 accuracy)``."""
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2])
    ids = jnp.concatenate([photo, photo])
    idx = jnp.arange(2 * n)
    partner = jnp.concatenate([idx[n:], idx[:n]])
    keep = (ids[:, None] != ids[None, :]) | (idx[None, :] == partner[:, None])
    logits = jnp.where(keep, scale * (z @ z.T), -1e9)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, partner).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == partner)


def _copy_recall(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of held-out views whose nearest original is their own photo."""
    sims = outputs["z2"].astype(np.float32) @ outputs["z1"].astype(np.float32).T
    return {"copy_recall_at_1": float(np.mean(np.argmax(sims, axis=1) == np.arange(len(sims))))}


def pretrain_task(cfg: PretrainConfig, encoder_params: Any) -> Task:
    """The loop's :class:`~tiefjax.train.tasks.Task` for pretraining ``encoder_params``."""
    projection = Projection(cfg.hidden, cfg.projection_dim)

    def init(rng: jax.Array) -> dict[str, Any]:
        head: dict[str, Any] = {"log_scale": jnp.asarray(math.log(1.0 / cfg.temperature))}
        if cfg.objective == "pooled":
            head["projection"] = projection.init(rng, jnp.zeros((1, 256)))["params"]
        return {"head": head, "encoder": jax.tree.map(jnp.asarray, encoder_params)}

    def embed(params: Any, images: jax.Array) -> jax.Array:
        if cfg.objective == "descriptor":
            return descriptor(params, images)
        pooled = encoder_features(params, images).mean(axis=(1, 2))
        z = projection.apply({"params": params["head"]["projection"]}, pooled)
        return z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-6)

    def loss(params: Any, batch: Mapping[str, jax.Array]):
        scale = jnp.exp(jnp.clip(params["head"]["log_scale"], 0.0, math.log(100.0)))
        z1, z2 = embed(params, batch["view1"]), embed(params, batch["view2"])
        value, acc = nt_xent(z1, z2, batch["photo"], scale)
        return value, {"loss": value, "pair_accuracy": acc, "temperature": 1.0 / scale}

    def predict(params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {"z1": descriptor(params, batch["view1"]), "z2": descriptor(params, batch["view2"])}

    return Task(
        PRETRAIN_TASK,
        ("view1", "view2", "photo"),
        projection,
        init,
        loss,
        predict,
        _copy_recall,
        "copy_recall_at_1",
        {"objective": cfg.objective},
    )


# -- the command ----------------------------------------------------------------------------------
@dataclass
class PretrainReport:
    step: int
    metrics: dict[str, float]
    baseline: dict[str, float]
    photos: int
    base: str  # the encoder pretraining started from: "imagenet" | "random"
    seconds: float
    images_per_second: float  # views through the training steps per second (this call)
    resumed_from: int

    def summary(self) -> str:
        recall = lambda m: m.get("copy_recall_at_1", float("nan"))  # noqa: E731
        return (
            f"pretrain: step {self.step} on {self.photos} photos from the {self.base} encoder, "
            f"{self.seconds:.0f}s ({self.images_per_second:.1f} views/s); held-out copy "
            f"recall@1 {recall(self.baseline):.3f} -> {recall(self.metrics):.3f}. Every later "
            "step now uses this encoder: train the heads again (tiefjax train), then index."
        )


def pretrain(
    ws: Workspace,
    config: PretrainConfig | None = None,
    *,
    reset: bool = False,
    progress: bool | None = None,
    **overrides: Any,
) -> PretrainReport:
    """Pretrain the encoder of ``ws`` on its catalog (resuming an interrupted run) and make it
    the workspace's encoder. ``overrides`` replace settings (``None`` values are ignored)."""
    from tiefjax.store import Store
    from tiefjax.train.artifacts import save_final

    distributed.start()
    t0 = time.perf_counter()
    ws.require()
    cfg = config if config is not None else ws.section("pretrain", PretrainConfig)
    cfg = with_overrides(cfg, "pretrain", **overrides)
    with Store(ws.store_path) as store:
        records = store.list_images()
        known = {i: d.box.as_tuple() for i, d in store.detections().items() if not d.fallback}
        known.update({i: b.box.as_tuple() for i, b in store.boxes().items()})
    paths = [rec.path for rec in records]
    boxes = [known.get(rec.id) for rec in records]
    if len(paths) < 2:
        raise InvalidInput(
            f"pretraining needs at least 2 catalog photos, {ws.root} has {len(paths)}; "
            "add photos with `tiefjax init WORKSPACE --images FOLDER`"
        )
    train_dir = ws.train_dir(PRETRAIN_TASK)
    if reset:
        shutil.rmtree(train_dir, ignore_errors=True)
    base = load_encoder(ws, pretrained=False)
    if compute_dtype(ws) != jnp.float32:
        print(
            "tiefjax pretrain: training runs in float32 ([compute] dtype applies to encoding)",
            file=sys.stderr,
        )
    trim = ws.section("index", IndexConfig).trim_borders
    length = max(len(paths), cfg.steps * cfg.batch_size)
    train_src = PhotoViews(paths, length, cfg, trim, boxes)
    test_src = HeldOutViews(paths, cfg, trim)
    ident = {
        "task": PRETRAIN_TASK,
        "config": cfg.identity(),
        "base": params_fingerprint(base.params),
        "photos": hashlib.sha256(json.dumps([paths, boxes]).encode()).hexdigest(),
        "trim": trim,
    }
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    distributed.check_same("settings, photos or base encoder", run_id)
    task = pretrain_task(cfg, base.params)
    result = run_loop(task, train_src, test_src, cfg, train_dir, run_id=run_id, progress=progress)
    meta = {
        "task": PRETRAIN_TASK,
        "step": result.step,
        "run_id": run_id,
        "base": base.source,
        "photos": len(paths),
        "metrics": result.metrics,
        "baseline": result.baseline,
        "config": dataclasses.asdict(cfg),
    }
    save_final(train_dir, {"encoder": result.params["encoder"]}, meta)
    seconds = time.perf_counter() - t0
    return PretrainReport(
        step=result.step,
        metrics=result.metrics,
        baseline=result.baseline,
        photos=len(paths),
        base=base.source,
        seconds=seconds,
        images_per_second=2 * cfg.batch_size * result.steps_per_second,
        resumed_from=result.resumed_from,
    )


def discard(ws: Workspace) -> bool:
    """Remove the pretrained encoder (the ported or random one is used again); False when none."""
    train_dir = ws.train_dir(PRETRAIN_TASK)
    if not train_dir.exists():
        return False
    shutil.rmtree(train_dir)
    return True
