"""Encode a catalog: choose each image's product box, crop, resize to 224, run the encoder.

Decoding and resizing run in worker threads (:func:`tiefjax.images.prefetch`) while the jitted,
batched encoder runs (JAX dispatch is asynchronous: batch ``i + 1`` is decoded while
batch ``i`` is on the device and batch ``i - 1`` is copied out). Results go into a memory-mapped
``features.npy`` (per-location L2-normalised 11x11x256 maps, float16, one row per image) from
which both descriptors are computed. Rows of images whose content hash, box and encoder are
unchanged are copied from the previous build instead of being encoded again.

Box choice per image (recorded as ``source``): the annotated box from the store, else the
locator's detection (when the classifier and regressors are trained), else the whole image.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiefjax.errors import NotFound
from tiefjax.images import (
    float_box,
    load_rgb_scaled,
    load_window,
    prefetch,
    scale_box,
    window_of,
)
from tiefjax.index.config import IndexConfig
from tiefjax.inference import ShardedApply
from tiefjax.nets.alexnet import FEATURE_CHANNELS, PATCH, WINDOW
from tiefjax.workspace import Workspace

FEATURE_DIM = PATCH * PATCH * FEATURE_CHANNELS  # 30976
FEATURES_DTYPE = np.float16
Box = tuple[float, float, float, float]


# -- the encoder ----------------------------------------------------------------------------------
class FeatureEncoder:
    """Encoder + per-location normalisation over every local device, ``batch_size`` per call.

    Short batches are padded to a power of two (:class:`tiefjax.inference.ShardedApply`), so a
    catalog (full batches) compiles once and a server's micro-batches of 1..16 at most five
    times, while a lone upload is never padded to a whole batch.

    ``start(batch)`` dispatches asynchronously and returns a handle; ``fetch(handle)`` waits and
    returns ``(n, 30976)`` float32 rows. ``__call__`` does both.
    """

    def __init__(
        self,
        params: Any,
        fingerprint: str,
        batch_size: int = 32,
        source: str = "",
        dtype: Any = "float32",
    ):
        from tiefjax.models import compiler_options, encoder_program
        from tiefjax.nets.heads import normalize_locations

        program = encoder_program(dtype)

        def encode(params: Any, windows: Any) -> Any:
            fmap = program(params, windows)
            return normalize_locations(fmap).reshape(fmap.shape[0], -1)

        self.fingerprint = fingerprint
        self.source = source
        self._apply = ShardedApply(
            encode, params, cap=batch_size, compiler_options=compiler_options()
        )
        self.batch_size = self._apply.cap

    def start(self, windows: np.ndarray) -> Any:
        return self._apply.start(windows)

    @staticmethod
    def fetch(handle: Any) -> np.ndarray:
        return ShardedApply.fetch(handle)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Features of any number of 224x224 uint8 windows, ``batch_size`` at a time."""
        parts = [
            self.fetch(self.start(windows[s : s + self.batch_size]))
            for s in range(0, len(windows), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM), np.float32)


def folder_fingerprint(*folders: Path) -> str:
    """Cheap content stamp of artefact folders: names, sizes and mtimes of their files."""
    digest = hashlib.sha256()
    for folder in folders:
        digest.update(str(folder).encode())
        if folder.exists():
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    digest.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def trained_fingerprint(ws: Workspace, *tasks: str) -> str:
    """Stamp of trained heads: their ``final.json`` (names a unique checkpoint per training).

    Not the whole training folder: resuming an already finished run rewrites its metrics log,
    which must not make the index re-locate or re-embed anything.
    """
    digest = hashlib.sha256()
    for task in tasks:
        final = ws.train_dir(task) / "final.json"
        digest.update(task.encode() + (final.read_bytes() if final.is_file() else b"untrained"))
    return digest.hexdigest()[:16]


def encoder_fingerprint(ws: Workspace) -> str:
    from tiefjax.models import ENCODER_DIR

    path = ws.models_dir / ENCODER_DIR
    return folder_fingerprint(path) if path.is_dir() else "random-seed-0"


def load_feature_encoder(ws: Workspace, batch_size: int = 32) -> FeatureEncoder:
    """The workspace encoder (ported ImageNet weights or the seeded random init) in the
    workspace's compute dtype."""
    from tiefjax.models import compute_dtype, load_encoder

    weights = load_encoder(ws)
    return FeatureEncoder(
        weights.params, encoder_fingerprint(ws), batch_size, weights.source, compute_dtype(ws)
    )


def load_locator(ws: Workspace, enabled: bool = True):
    """``(Locator, fingerprint)`` when the classifier and regressors are trained, else None."""
    if not enabled:
        return None
    from tiefjax.locate import Locator

    try:
        locator = Locator.load(ws)
    except NotFound:
        return None
    return locator, trained_fingerprint(ws, "classifier", "regressor")


# -- rows -----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One indexed image: its content hash, the box encoded and where that box came from."""

    id: str
    sha256: str
    box: Box
    source: str  # "annotation" | "detection" | "whole"
    probability: float | None = None  # locator's foreground probability (detections)
    fallback: bool = False  # the whole image was used (no locator, or nothing confident)

    def key(self) -> tuple:
        return (self.sha256, tuple(round(float(v), 2) for v in self.box))

    def to_json(self) -> dict:
        d = asdict(self)
        d["box"] = [float(v) for v in self.box]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Row:
        return cls(**{**d, "box": tuple(d["box"])})


@dataclass
class Previous:
    """What a new build may re-use from the current one."""

    rows: dict[str, tuple[int, Row]]  # id -> (row position, row)
    features: np.ndarray | None  # (N, 30976) memmap
    encoder: str
    locator: str | None


@dataclass
class EncodeResult:
    rows: list[Row]
    features_path: Path
    encoded: int = 0
    reused: int = 0
    located: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (id, message)
    seconds: float = 0.0
    encoder_source: str = ""
    encoder_fingerprint: str = ""
    detections: list[Any] = field(default_factory=list)  # new store.Detection, to be saved

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds else 0.0


# -- the pipeline ---------------------------------------------------------------------------------
@dataclass
class _Job:
    pos: int  # row position in the output
    id: str
    path: str
    sha256: str
    size: tuple[int, int]
    box: Box | None  # None: locate first
    source: str
    probability: float | None = None
    fallback: bool = False


def encode_catalog(
    ws: Workspace,
    out_dir: Path,
    config: IndexConfig | None = None,
    previous: Previous | None = None,
    encoder: FeatureEncoder | None = None,
    locator: Any = "auto",
    boxes_from: dict[str, Row] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> EncodeResult:
    """Encode every image of the store into ``out_dir/features.npy``; returns the rows written.

    ``locator``: "auto" loads the trained locator if there is one; None means whole images.
    ``boxes_from``: use these rows' boxes instead of choosing (a second encoder, same crops).
    ``shard = (i, n)``: only every ``n``-th image (by id) from the ``i``-th, for process ``i`` of
    ``n``. Corrupt images are reported in ``errors`` and left out. New detections are returned
    in ``detections`` for the caller to store (one process writes the store).
    """
    from tqdm import tqdm

    from tiefjax.store import Box as StoreBox
    from tiefjax.store import Detection, Store

    cfg = config or IndexConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir.mkdir(parents=True, exist_ok=True)
    with Store(ws.store_path) as store:
        images = store.list_images()[shard[0] :: shard[1]]
        boxes = {k: v.box.as_tuple() for k, v in store.boxes().items()}
    encoder = encoder or load_feature_encoder(ws, cfg.batch_size)
    if boxes_from is not None:
        images = [rec for rec in images if rec.id in boxes_from]
        locator = None
    loc = load_locator(ws, cfg.locate) if locator == "auto" else locator
    locator_obj, locator_fp = loc if loc else (None, None)

    prev_ok = (
        previous is not None
        and previous.features is not None
        and previous.encoder == encoder.fingerprint
    )
    rows: list[Row | None] = [None] * len(images)
    jobs: list[_Job] = []
    copies: list[tuple[int, int]] = []  # (new pos, old pos)
    for pos, rec in enumerate(images):
        size = (int(rec.width), int(rec.height))
        old = previous.rows.get(rec.id) if previous else None
        prob, fallback = None, False
        box: Box | None
        if boxes_from is not None:
            given = boxes_from[rec.id]
            box, source, prob, fallback = given.box, given.source, given.probability, given.fallback
        elif rec.id in boxes:
            box, source = boxes[rec.id], "annotation"
        elif locator_obj is not None:
            box, source = None, "detection"
            if (
                old is not None
                and previous is not None
                and old[1].sha256 == rec.sha256
                and old[1].source == "detection"
                and previous.locator == locator_fp
            ):
                box = old[1].box  # the stored detection is still valid
        else:
            box, source = (0.0, 0.0, float(size[0]), float(size[1])), "whole"
            fallback = True  # no locator: the whole image is used
        if box is not None:
            if source == "detection" and old is not None and boxes_from is None:
                prob, fallback = old[1].probability, old[1].fallback
            row = Row(rec.id, rec.sha256, float_box(box), source, prob, fallback)
            if prev_ok and old is not None and old[1].key() == row.key():
                rows[pos] = row
                copies.append((pos, old[0]))
                continue
        jobs.append(_Job(pos, rec.id, rec.path, rec.sha256, size, box, source, prob, fallback))

    features_path = out_dir / "features.npy"
    features = np.lib.format.open_memmap(
        features_path, mode="w+", dtype=FEATURES_DTYPE, shape=(len(images), FEATURE_DIM)
    )
    for new, old_pos in copies:
        assert previous is not None and previous.features is not None  # copies imply prev_ok
        features[new] = previous.features[old_pos]
    result = EncodeResult(
        [],
        features_path,
        reused=len(copies),
        encoder_source=encoder.source,
        encoder_fingerprint=encoder.fingerprint,
    )
    if jobs:
        log(
            f"encoding {len(jobs)} image(s) ({len(copies)} unchanged re-used)"
            + (", locating products" if locator_obj is not None else "")
        )
    t0 = time.perf_counter()

    def decode(job: _Job):
        if job.box is None:  # the whole photo, as big as the locator looks at it
            assert locator_obj is not None  # only photos to locate come without a box
            return load_rgb_scaled(job.path, locator_obj.config.decode_short_side, name=job.id)
        whole = job.source == "whole"
        return load_window(job.path, None if whole else job.box, WINDOW, name=job.id)

    new_detections: list[Detection] = []
    pending: list[tuple[list[int], Any]] = []
    win_batch: list[np.ndarray] = []
    pos_batch: list[int] = []
    loc_batch: list[tuple[_Job, Any]] = []

    def drain(keep: int) -> None:
        while len(pending) > keep:
            positions, handle = pending.pop(0)
            feats = encoder.fetch(handle)
            for p, f in zip(positions, feats, strict=True):
                features[p] = f.astype(FEATURES_DTYPE)

    def flush_encode(force: bool = False) -> None:
        while len(win_batch) >= encoder.batch_size or (force and win_batch):
            take = min(len(win_batch), encoder.batch_size)
            windows = np.stack(win_batch[:take])
            pending.append((pos_batch[:take], encoder.start(windows)))
            del win_batch[:take], pos_batch[:take]
            drain(keep=1)  # one batch in flight while the next is decoded

    def flush_locate() -> None:
        if not loc_batch:
            return
        assert locator_obj is not None  # images are only queued to locate when there is one
        located = locator_obj.locate_many([img for _, (img, _) in loc_batch])
        for (job, (img, scale)), found in zip(loc_batch, located, strict=True):
            box = scale_box(found.box, scale)  # stored in the photo's own pixels
            prob = float(found.probability)
            rows[job.pos] = Row(job.id, job.sha256, box, "detection", prob, bool(found.fallback))
            new_detections.append(Detection(job.id, StoreBox(*box), prob, bool(found.fallback)))
            win_batch.append(window_of(img, found.box, WINDOW, scale, job.path, job.id))
            pos_batch.append(job.pos)
        result.located += len(loc_batch)
        loc_batch.clear()
        flush_encode()

    bar = tqdm(total=len(jobs), desc="encode", unit="img", disable=None if progress else True)
    try:
        for job, value in prefetch(decode, jobs, cfg.workers, cfg.prefetch_depth):
            bar.update(1)
            if isinstance(value, BaseException):
                result.errors.append((job.id, str(value)))
                log(f"skipped {job.id}: {value}")
                continue
            if job.box is None:
                loc_batch.append((job, value))
                if len(loc_batch) >= encoder.batch_size:
                    flush_locate()
                continue
            rows[job.pos] = Row(
                job.id, job.sha256, job.box, job.source, job.probability, job.fallback
            )
            win_batch.append(value)
            pos_batch.append(job.pos)
            flush_encode()
        flush_locate()
        flush_encode(force=True)
        drain(keep=0)
    finally:
        bar.close()
    result.encoded = len(jobs) - len(result.errors)
    result.seconds = time.perf_counter() - t0
    features.flush()
    result.detections = new_detections

    kept = [i for i, r in enumerate(rows) if r is not None]
    if len(kept) < len(rows):  # drop the rows of images that could not be read
        compact_path = out_dir / "features.compact.npy"
        compact = np.lib.format.open_memmap(
            compact_path, mode="w+", dtype=FEATURES_DTYPE, shape=(len(kept), FEATURE_DIM)
        )
        for new, old_pos in enumerate(kept):
            compact[new] = features[old_pos]
        compact.flush()
        del compact, features
        os.replace(compact_path, features_path)
    else:
        del features
    result.rows = [rows[i] for i in kept]  # type: ignore[misc]
    return result


class ScaledRows:
    """Array-like view ``features * scale`` as float32 (rows, slices, fancy indices)."""

    def __init__(self, array: np.ndarray, scale: float):
        self.array = array
        self.scale = np.float32(scale)
        self.shape = array.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.array[idx], np.float32) * self.scale


def unsupervised_rows(features: np.ndarray) -> ScaledRows:
    """The unsupervised descriptors (flattened normalised maps / 11, unit norm) of ``features``."""
    return ScaledRows(features, 1.0 / PATCH)
