"""Encode a catalog: choose each image's product box, crop, resize to 224, run the encoder.

Decoding and resizing run in worker threads (:func:`tiefjax.images.prefetch`) while the jitted,
batched encoder runs (JAX dispatch is asynchronous: batch ``i + 1`` is decoded while
batch ``i`` is on the device and batch ``i - 1`` is copied out). Results go into a memory-mapped
``features.npy`` (per-location L2-normalised 11x11x256 maps, float16, one row per image) from
which both descriptors are computed. Rows of images whose content hash, box and encoder are
unchanged are copied from the previous build instead of being encoded again.

The work is done in chunks of ``[index] chunk_size`` images: when a chunk is finished its
features are flushed and a record of it (rows, skipped photos, detections) is written, so a
killed build started again into the same folder resumes from its last finished chunk.

Box choice per image (recorded as ``source``): the annotated box from the store, else the
locator's detection (when the classifier and regressors are trained), else the whole image,
its plain borders trimmed (``[index] trim_borders``). With ``[index] mirror`` a photo and its
mirror image are encoded together into one map, so a mirrored copy gets the same descriptor.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tiefjax.errors import NotFound
from tiefjax.images import (
    float_box,
    load_rgb_scaled,
    load_window,
    prefetch,
    scale_box,
    whole_box,
    window_of,
)
from tiefjax.index.config import IndexConfig
from tiefjax.inference import ShardedApply
from tiefjax.nets.alexnet import FEATURE_CHANNELS, PATCH, WINDOW
from tiefjax.workspace import Workspace, atomic_write_text

if TYPE_CHECKING:
    from tiefjax.index.row_table import RowTable

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
        mirror: bool = False,
    ):
        from tiefjax.models import compiler_options, encoder_program
        from tiefjax.nets.heads import normalize_locations

        program = encoder_program(dtype, mirror)

        def encode(params: Any, windows: Any) -> Any:
            fmap = program(params, windows)
            return normalize_locations(fmap).reshape(fmap.shape[0], -1)

        self.fingerprint = descriptor_fingerprint(fingerprint, mirror)
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


def descriptor_fingerprint(weights: str, mirror: bool) -> str:
    """Stamp of what makes a window's features: the weights' stamp and ``[index] mirror``."""
    return weights + ("+mirror" if mirror else "")


def weights_fingerprint(ws: Workspace) -> str:
    """Stamp of the encoder's weights: the pretrained encoder's, else the ported, else seed 0."""
    from tiefjax.models import ENCODER_DIR, pretrained_path

    pretrained = pretrained_path(ws)
    if pretrained is not None:
        return "pretrained-" + folder_fingerprint(pretrained)
    path = ws.models_dir / ENCODER_DIR
    return folder_fingerprint(path) if path.is_dir() else "random-seed-0"


def encoder_fingerprint(ws: Workspace) -> str:
    """Stamp of the workspace's :class:`FeatureEncoder` (weights and descriptor settings): a
    change means the catalog is encoded again."""
    return descriptor_fingerprint(weights_fingerprint(ws), ws.section("index", IndexConfig).mirror)


def load_feature_encoder(ws: Workspace, batch_size: int = 32) -> FeatureEncoder:
    """The workspace encoder (pretrained, ported ImageNet weights or the seeded random init) in
    the workspace's compute dtype, mirror-invariant as ``[index] mirror`` says."""
    from tiefjax.models import compute_dtype, load_encoder

    weights = load_encoder(ws)
    mirror = ws.section("index", IndexConfig).mirror
    return FeatureEncoder(
        weights.params,
        weights_fingerprint(ws),
        batch_size,
        weights.source,
        compute_dtype(ws),
        mirror,
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

    rows: RowTable  # the build's rows, memory-mapped
    features: np.ndarray | None  # (N, 30976) memmap
    encoder: str
    locator: str | None
    trim: bool = False  # whole photos' borders were trimmed

    def get(self, image_id: str) -> tuple[int, Row] | None:
        """(row position, row) of ``image_id`` in the previous build, or None."""
        pos = self.rows.position(image_id)
        return None if pos is None else (pos, self.rows.row(pos))


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
    resumed: int = 0  # rows taken from chunks an interrupted run finished

    def add(self, done: ChunkWork) -> None:
        """Count a chunk this run encoded."""
        self.errors += done.errors
        self.located += done.located
        self.encoded += done.encoded
        self.reused += done.reused

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

    @property
    def to_locate(self) -> bool:
        return self.box is None and self.source == "detection"


@dataclass(frozen=True)
class Catalog:
    """What the store says is to be indexed: every photo (by id) and the annotated boxes.

    Read once at the top of a build (:meth:`read`); the encoding below works on it, not on the
    workspace."""

    images: list[Any]  # store.ImageRecord, sorted by id
    boxes: dict[str, Box]

    @classmethod
    def read(cls, ws: Workspace) -> Catalog:
        from tiefjax.store import Store

        with Store(ws.store_path) as store:
            images = store.list_images()
            boxes = {k: v.box.as_tuple() for k, v in store.boxes().items()}
        return cls(images, boxes)


def encode_catalog(
    catalog: Catalog,
    out_dir: Path,
    encoder: FeatureEncoder,
    locator: tuple[Any, str] | None,
    config: IndexConfig | None = None,
    previous: Previous | None = None,
    boxes_from: dict[str, Row] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    on_detections: Callable[[list[Any]], None] | None = None,
) -> EncodeResult:
    """Encode every photo of ``catalog`` into ``out_dir/features.npy``; returns the rows written.

    ``locator``: ``(Locator, fingerprint)`` to locate unannotated photos, or None for whole
    photos (:func:`load_locator` loads the workspace's).
    ``boxes_from``: use these rows' boxes instead of choosing (a second encoder, same crops).
    ``shard = (i, n)``: only every ``n``-th image (by id) from the ``i``-th, for process ``i`` of
    ``n``. Corrupt images are reported in ``errors`` and left out. The work goes to disk in
    chunks of ``chunk_size`` images (``out_dir/chunks/``), so chunks an interrupted run finished
    in the same ``out_dir`` are taken as they are (counted in ``resumed``), not encoded again.
    New detections go to ``on_detections`` after each chunk when it is given (the store's one
    writer), else they are returned in ``detections`` for the caller to store.
    """
    from tqdm import tqdm

    cfg = config or IndexConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir.mkdir(parents=True, exist_ok=True)
    images, boxes = catalog.images[shard[0] :: shard[1]], catalog.boxes
    if boxes_from is not None:
        images = [rec for rec in images if rec.id in boxes_from]
        locator = None
    locator_obj, locator_fp = locator if locator else (None, None)
    locating = locator_fp if locator_obj is not None else None
    rows, jobs, copies = _plan(
        images, boxes, previous, encoder, locating, boxes_from, cfg.trim_borders
    )
    chunks = _Chunks(out_dir / CHUNKS, [rec.id for rec in images], cfg.chunk_size)
    result = EncodeResult([], out_dir / "features.npy")
    result.encoder_source, result.encoder_fingerprint = encoder.source, encoder.fingerprint
    report = on_detections or result.detections.extend
    todo = [c for c in range(chunks.count) if not _resume(chunks, c, rows, result, report)]
    jobs_of = _by_chunk(jobs, lambda j: chunks.of(j.pos), todo)
    copies_of = _by_chunk(copies, lambda cp: chunks.of(cp[0]), todo)
    to_encode = sum(len(js) for js in jobs_of.values())
    if to_encode:
        log(
            f"encoding {to_encode} image(s) ({sum(map(len, copies_of.values()))} unchanged "
            f"re-used, {result.resumed} from an interrupted build)"
            + (", locating products" if locator_obj is not None else "")
        )
    t0 = time.perf_counter()
    pipe = _Pipeline(encoder, locator_obj, chunks.features, rows, cfg.trim_borders)
    left = {c: len(jobs_of[c]) for c in todo}  # jobs of each chunk not yet decoded
    open_chunks = collections.deque(todo)

    def finish_chunks() -> None:
        """Finish (encode, copy, record) the chunks whose jobs have all been handed in."""
        while open_chunks and left[open_chunks[0]] == 0:
            c = open_chunks.popleft()
            done = pipe.finish()
            for new, old_pos in copies_of[c]:
                assert previous is not None and previous.features is not None  # copies: prev_ok
                chunks.features[new] = previous.features[old_pos]
            done.encoded, done.reused = len(jobs_of[c]) - len(done.errors), len(copies_of[c])
            chunks.save(c, rows, done)
            result.add(done)
            if done.detections:
                report(done.detections)

    queue = [j for c in todo for j in jobs_of[c]]
    with tqdm(
        total=len(queue), desc="encode", unit="img", disable=None if progress else True
    ) as bar:
        finish_chunks()  # chunks with nothing to encode (copies only)
        for job, value in prefetch(pipe.decode, queue, cfg.workers, cfg.prefetch_depth):
            bar.update(1)
            if isinstance(value, BaseException):
                log(f"skipped {job.id}: {value}")
            pipe.add(job, value)
            left[chunks.of(job.pos)] -= 1
            finish_chunks()
    result.seconds = time.perf_counter() - t0
    kept = [i for i, r in enumerate(rows) if r is not None]
    chunks.write_features(kept, result.features_path)
    result.rows = [rows[i] for i in kept]  # type: ignore[misc]
    return result


T = TypeVar("T")


def _by_chunk(items: list[T], chunk_of: Callable[[T], int], todo: list[int]) -> dict[int, list[T]]:
    """``items`` of the chunks in ``todo``, by chunk, in one pass (a million jobs, hundreds of
    chunks)."""
    out: dict[int, list[T]] = {c: [] for c in todo}
    for item in items:
        group = out.get(chunk_of(item))
        if group is not None:
            group.append(item)
    return out


def _plan(
    images: list[Any],
    boxes: dict[str, Box],
    previous: Previous | None,
    encoder: FeatureEncoder,
    locating: str | None,
    boxes_from: dict[str, Row] | None,
    trim: bool,
) -> tuple[list[Row | None], list[_Job], list[tuple[int, int]]]:
    """Each image's box (annotation, the previous build's still valid detection, to locate, or
    the whole photo): (rows known already, jobs to decode and encode, rows to copy from the
    previous build as (new position, old position)). ``locating``: the locator's fingerprint,
    None without one; ``trim``: whole photos have their borders trimmed."""
    prev_ok = (
        previous is not None
        and previous.features is not None
        and previous.encoder == encoder.fingerprint
    )
    rows: list[Row | None] = [None] * len(images)
    jobs: list[_Job] = []
    copies: list[tuple[int, int]] = []
    for pos, rec in enumerate(images):
        size = (int(rec.width), int(rec.height))
        old = previous.get(rec.id) if previous else None
        prob, fallback = None, False
        box: Box | None
        if boxes_from is not None:
            given = boxes_from[rec.id]
            box, source, prob, fallback = given.box, given.source, given.probability, given.fallback
        elif rec.id in boxes:
            box, source = boxes[rec.id], "annotation"
        elif locating is not None:
            box, source = None, "detection"
            if (
                old is not None
                and previous is not None
                and old[1].sha256 == rec.sha256
                and old[1].source == "detection"
                and previous.locator == locating
            ):
                box = old[1].box  # the stored detection is still valid
        else:
            box, source = (0.0, 0.0, float(size[0]), float(size[1])), "whole"
            fallback = True  # no locator: the whole image is used (its borders trimmed)
            if trim:  # the trimmed box is found when decoded, unless last build's still holds
                kept = (
                    previous is not None
                    and previous.trim
                    and old is not None
                    and old[1].source == "whole"
                    and old[1].sha256 == rec.sha256
                )
                box = old[1].box if kept and old is not None else None
        if box is not None:
            if source == "detection" and old is not None and boxes_from is None:
                prob, fallback = old[1].probability, old[1].fallback
            row = Row(rec.id, rec.sha256, float_box(box), source, prob, fallback)
            if prev_ok and old is not None and old[1].key() == row.key():
                rows[pos] = row
                copies.append((pos, old[0]))
                continue
        jobs.append(_Job(pos, rec.id, rec.path, rec.sha256, size, box, source, prob, fallback))
    return rows, jobs, copies


CHUNKS = "chunks"


@dataclass
class ChunkWork:
    """What one chunk of an encoding did: its skipped photos, new detections and counts."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    detections: list[Any] = field(default_factory=list)  # store.Detection
    located: int = 0
    encoded: int = 0
    reused: int = 0


class _Chunks:
    """The resumable state of one encoding: ``features.npy`` with a row for every image of the
    share, written in place as it is encoded, and per finished chunk a JSON record (its images'
    ids and rows, skipped photos, detections) written after the features are flushed:
    a chunk with a record is complete on disk, whatever killed the process afterwards."""

    def __init__(self, folder: Path, ids: list[str], size: int):
        self.folder, self.ids, self.size = folder, ids, size
        folder.mkdir(parents=True, exist_ok=True)
        path, shape = folder / "features.npy", (len(ids), FEATURE_DIM)
        try:
            features = np.lib.format.open_memmap(path, mode="r+")
            if features.shape != shape or features.dtype != FEATURES_DTYPE:
                raise ValueError("another catalog's features")
        except (OSError, ValueError):
            for stale in folder.glob("*.json"):
                stale.unlink()
            features = np.lib.format.open_memmap(path, mode="w+", dtype=FEATURES_DTYPE, shape=shape)
        self.features = features

    @property
    def count(self) -> int:
        return -(-len(self.ids) // self.size)

    def of(self, pos: int) -> int:
        """The chunk of row position ``pos``."""
        return pos // self.size

    def _record(self, c: int) -> Path:
        return self.folder / f"{c:06d}.json"

    def load(self, c: int) -> dict[str, Any] | None:
        """Chunk ``c``'s record if an earlier run finished it for these very images, else None."""
        try:
            record = json.loads(self._record(c).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        expected = self.ids[c * self.size : (c + 1) * self.size]
        return record if isinstance(record, dict) and record.get("ids") == expected else None

    def save(self, c: int, rows: list[Row | None], done: ChunkWork) -> None:
        """Flush the chunk's features, then record it as finished (atomically)."""
        self.features.flush()
        span = range(c * self.size, min(len(self.ids), (c + 1) * self.size))
        record = {
            "ids": self.ids[span.start : span.stop],
            "rows": [None if r is None else r.to_json() for r in rows[span.start : span.stop]],
            "errors": done.errors,
            "detections": detections_to_json(done.detections),
        }
        atomic_write_text(self._record(c), json.dumps(record))

    def write_features(self, kept: list[int], path: Path) -> None:
        """``path``: the rows ``kept`` (images that could be read), a hard link to the working
        file when that is all of them (no copy of a million rows), else a compact copy."""
        self.features.flush()
        tmp = path.with_name(path.name + ".part")
        tmp.unlink(missing_ok=True)
        if len(kept) == len(self.ids):
            try:
                os.link(self.folder / "features.npy", tmp)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(self.folder / "features.npy", tmp)
        else:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=FEATURES_DTYPE, shape=(len(kept), FEATURE_DIM)
            )
            for s in range(0, len(kept), 1024):
                out[s : s + 1024] = self.features[kept[s : s + 1024]]
            out.flush()
            del out
        os.replace(tmp, path)


def _resume(
    chunks: _Chunks,
    c: int,
    rows: list[Row | None],
    result: EncodeResult,
    report: Callable[[list[Any]], Any],
) -> bool:
    """Take chunk ``c`` as an interrupted run finished it (rows, skipped photos, detections,
    handed to ``report`` again in case they were not stored); False when it must be encoded."""
    record = chunks.load(c)
    if record is None:
        return False
    start = c * chunks.size
    for i, row in enumerate(record["rows"]):
        rows[start + i] = None if row is None else Row.from_json(row)
    result.resumed += sum(1 for row in record["rows"] if row is not None)
    result.errors += [(i, m) for i, m in record["errors"]]
    detections = detections_from_json(record["detections"])
    if detections:
        report(detections)
    return True


def detections_to_json(detections: list[Any]) -> list[dict[str, Any]]:
    """``store.Detection`` objects as JSON-able dicts (chunk records, process parts)."""
    return [asdict(d) for d in detections]


def detections_from_json(items: list[dict[str, Any]]) -> list[Any]:
    """``store.Detection`` objects from :func:`detections_to_json`'s output."""
    from tiefjax.store import Box as StoreBox
    from tiefjax.store import Detection

    return [Detection(**{**d, "box": StoreBox(**d["box"])}) for d in items]


class _Pipeline:
    """Decode, locate and encode jobs in batches, one encoder batch in flight while the next is
    decoded, the features written into ``features`` at each job's row position."""

    def __init__(
        self,
        encoder: FeatureEncoder,
        locator: Any,
        features: np.ndarray,
        rows: list[Row | None],
        trim: bool,
    ):
        self.encoder, self.locator, self.features, self.rows = encoder, locator, features, rows
        self.trim = trim
        self.pending: list[tuple[list[int], Any]] = []
        self.windows: list[np.ndarray] = []
        self.positions: list[int] = []
        self.to_locate: list[tuple[_Job, Any]] = []
        self.done = ChunkWork()

    def decode(self, job: _Job) -> Any:
        """``(window to encode, its box)``, or the whole photo as big as the locator looks at
        it (to locate first). A whole photo's box is found here: its borders trimmed."""
        if job.to_locate:
            assert self.locator is not None
            return load_rgb_scaled(job.path, self.locator.config.decode_short_side, name=job.id)
        if job.source == "whole":
            img, scale = load_rgb_scaled(job.path, WINDOW, name=job.id)
            box = whole_box(img, self.trim)
            return window_of(img, box, WINDOW, scale, job.path, job.id), scale_box(box, scale)
        return load_window(job.path, job.box, WINDOW, name=job.id), job.box

    def add(self, job: _Job, value: Any) -> None:
        """One decoded job (or the exception decoding it raised: the photo is skipped)."""
        if isinstance(value, BaseException):
            self.done.errors.append((job.id, str(value)))
        elif job.to_locate:
            self.to_locate.append((job, value))
            if len(self.to_locate) >= self.encoder.batch_size:
                self._locate()
        else:
            window, box = value
            self.rows[job.pos] = Row(
                job.id, job.sha256, float_box(box), job.source, job.probability, job.fallback
            )
            self._queue(window, job.pos)

    def finish(self) -> ChunkWork:
        """Locate and encode everything queued, wait for it; what was done since last time."""
        self._locate()
        self._encode(force=True)
        self._drain(keep=0)
        done, self.done = self.done, ChunkWork()
        return done

    def _queue(self, window: np.ndarray, pos: int) -> None:
        self.windows.append(window)
        self.positions.append(pos)
        self._encode()

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            positions, handle = self.pending.pop(0)
            for p, f in zip(positions, self.encoder.fetch(handle), strict=True):
                self.features[p] = f.astype(FEATURES_DTYPE)

    def _encode(self, force: bool = False) -> None:
        size = self.encoder.batch_size
        while len(self.windows) >= size or (force and self.windows):
            take = min(len(self.windows), size)
            handle = self.encoder.start(np.stack(self.windows[:take]))
            self.pending.append((self.positions[:take], handle))
            del self.windows[:take], self.positions[:take]
            self._drain(keep=1)  # one batch in flight while the next is decoded

    def _locate(self) -> None:
        from tiefjax.store import Box as StoreBox
        from tiefjax.store import Detection

        if not self.to_locate:
            return
        found_all = self.locator.locate_many([img for _, (img, _) in self.to_locate])
        for (job, (img, scale)), found in zip(self.to_locate, found_all, strict=True):
            box = scale_box(found.box, scale)  # stored in the photo's own pixels
            prob, fallback = float(found.probability), bool(found.fallback)
            self.rows[job.pos] = Row(job.id, job.sha256, box, "detection", prob, fallback)
            unsure, reason = self.locator.uncertainty(found)
            self.done.detections.append(
                Detection(job.id, StoreBox(*box), prob, fallback, unsure, reason)
            )
            self._queue(window_of(img, found.box, WINDOW, scale, job.path, job.id), job.pos)
        self.done.located += len(self.to_locate)
        self.to_locate.clear()


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
