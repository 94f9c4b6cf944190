"""``tiefjax prepare``: the three training sets from the annotation store, rebuilt only on change.

Reads images, boxes and triplets from the store and writes, with tensorflow-datasets builders
(ArrayRecord, no TensorFlow), into ``WS/datasets/<build>/``:

* ``classification``: foreground and background crops of every image with a box (at
  ``[prepare] short_sides``);
* ``regression``: foreground crops with raw box deltas (dl, dt, dr, db) in crop pixels (at
  ``regression_short_sides``, by default the same scales and crops);
* ``triplets``: 224x224 product crops (stored box, else the whole photo) of every triplet.

Each has a train and a test split, by image (:func:`tiefjax.data.splits.split_of`; a triplet goes
with its reference). ``WS/datasets/prepared.json`` (the *stamp*) names the current build with the
annotations fingerprint and settings it was made from, the summary, and the train-split
regression target mean/std. It is written last and atomically: a build happens in a hidden
``.partial`` folder that becomes visible only when complete, so an interrupted prepare leaves the
previous sets in use and is redone from scratch next time. Unchanged fingerprint and settings:
nothing is rebuilt.

Memory does not grow with the catalog: photos stream through a small thread pool, crops go to a
temporary spool file and then to ArrayRecord shards of at most
:data:`~tiefjax.data.builders.RECORDS_PER_SHARD` examples.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tiefjax.data import builders
from tiefjax.data.builders import DATASETS, RECORDS_PER_SHARD, Spool, chunk_by_weight
from tiefjax.data.crops import (
    CLASSIFICATION,
    FOREGROUND,
    REGRESSION,
    Deltas,
    PrepareConfig,
    decode_size,
    encode_image,
    product_crop,
    product_size,
    render_crops,
    sample_crops,
)
from tiefjax.data.splits import SPLITS, split_of
from tiefjax.errors import Conflict, InvalidInput, NotFound, TiefjaxError
from tiefjax.images import image_size, load_rgb, prefetch
from tiefjax.store import ImageRecord, Store
from tiefjax.workspace import Workspace, atomic_write_text

STAMP_NAME = "prepared.json"
#: Bumped whenever what a build contains changes meaning; older builds are then rebuilt.
FORMAT_VERSION = 1
_WORKERS = max(1, min(4, os.cpu_count() or 1))

__all__ = [
    "PrepareConfig",
    "PrepareSummary",
    "load_split",
    "prepare",
    "prepared_state",
    "regression_stats",
]


# -- summary ----------------------------------------------------------------------------------
@dataclass
class PrepareSummary:
    """What a prepare produced (or found up to date).

    ``counts[dataset][split]`` has ``total`` and, for classification, ``foreground`` and
    ``background``. ``without_box`` images are left out of the crop sets; ``skipped`` lists
    images that could not be read (id, reason) and are left out of everything.
    """

    rebuilt: bool
    build: str
    fingerprint: str
    images: int
    with_box: int
    without_box: int
    split_images: dict[str, int]
    counts: dict[str, dict[str, dict[str, int]]]
    triplets_left_out: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    regression_mean: list[float] | None = None
    regression_std: list[float] | None = None
    seconds: float = 0.0
    crops_per_second: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareSummary:
        data = dict(data)
        data["skipped"] = [tuple(x) for x in data.get("skipped", [])]
        return cls(**data)

    def table(self) -> str:
        """Human-readable summary: one line per dataset and split."""
        state = "prepared" if self.rebuilt else "up to date (annotations and settings unchanged)"
        lines = [
            f"datasets {state}: {self.build}",
            f"images: {self.images} ({self.with_box} with a box: {self.split_images['train']} "
            f"train, {self.split_images['test']} test; {self.without_box} without a box, left "
            "out of the crop sets)",
        ]
        if self.rebuilt:
            lines.append(f"took {self.seconds:.1f} s ({self.crops_per_second:.0f} crops/s)")
        lines.append(f"{'set':<16}{'split':<7}{'total':>8}{'foreground':>12}{'background':>12}")
        for name in DATASETS:
            for split in SPLITS:
                c = self.counts[name][split]
                fg = str(c.get("foreground", "")) if name == "classification" else ""
                bg = str(c.get("background", "")) if name == "classification" else ""
                lines.append(f"{name:<16}{split:<7}{c['total']:>8}{fg:>12}{bg:>12}")
        if self.regression_mean is not None and self.regression_std is not None:
            mean = ", ".join(f"{v:.1f}" for v in self.regression_mean)
            std = ", ".join(f"{v:.1f}" for v in self.regression_std)
            lines.append(f"regression targets (train): mean [{mean}], std [{std}]")
        for image_id, reason in self.skipped:
            lines.append(f"skipped {image_id}: {reason}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


# -- public API -------------------------------------------------------------------------------
def prepare(
    ws: Workspace, config: PrepareConfig | None = None, force: bool = False
) -> PrepareSummary:
    """Build the three sets unless the stamp says they match the store and the settings."""
    ws.require()
    config = config if config is not None else ws.section("prepare", PrepareConfig)
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(ws):
        snap = _snapshot(ws)
        stamp = _read_stamp(ws)
        if (
            not force
            and stamp is not None
            and stamp.get("format") == FORMAT_VERSION
            and stamp.get("fingerprint") == snap.fingerprint
            and stamp.get("config") == config.as_dict()
            and (ws.datasets_dir / stamp["build"]).is_dir()
        ):
            summary = PrepareSummary.from_dict(stamp["summary"])
            summary.rebuilt = False
            return summary
        if not snap.boxes:
            raise InvalidInput(
                f"no product boxes in {ws.store_path}: the crop sets need images with a box. "
                "Draw boxes in the site (tiefjax serve) or load them with: tiefjax import "
                f"{ws.root} boxes.json"
            )
        keep = stamp["build"] if stamp else None
        _remove_builds(ws, keep=keep)
        build = f"build-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        partial = ws.datasets_dir / f".{build}.partial"
        partial.mkdir()
        try:
            summary, reg_stats = _Build(partial, snap, config, build).run()
            os.replace(partial, ws.datasets_dir / build)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        new_stamp = {
            "format": FORMAT_VERSION,
            "build": build,
            "fingerprint": snap.fingerprint,
            "config": config.as_dict(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "regression": reg_stats,
            "summary": summary.to_dict(),
        }
        atomic_write_text(ws.datasets_dir / STAMP_NAME, json.dumps(new_stamp, indent=1) + "\n")
        _remove_builds(ws, keep=build)
        return summary


def prepared_state(ws: Workspace) -> dict[str, Any]:
    """The stamp of the current build (build, fingerprint, config, summary, regression stats).

    Feature caches can key on ``build``: it changes whenever the sets are rebuilt.
    """
    stamp = _read_stamp(ws)
    if stamp is None or not (ws.datasets_dir / stamp["build"]).is_dir():
        raise NotFound(
            f"no prepared training sets in {ws.root}; run `tiefjax prepare {ws.root}` first"
        )
    return stamp


def regression_stats(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and std (float32[4]) of the train-split regression targets."""
    reg = prepared_state(ws).get("regression")
    if not reg:
        raise NotFound(
            "the train split has no foreground crops, so there are no regression statistics; "
            f"add boxes (or lower [prepare] test_fraction) and run `tiefjax prepare {ws.root}`"
        )
    return np.asarray(reg["mean"], np.float32), np.asarray(reg["std"], np.float32)


def load_split(ws: Workspace, dataset: str, split: str) -> PreparedSplit:
    """Random-access source (``len``, ``[i]``) of one prepared set and split.

    Records: classification ``{"image", "label", "image_id"}``, regression
    ``{"image", "target", "image_id"}``, triplets ``{"reference", "positive", "negative",
    "reference_id", "positive_id", "negative_id"}``; images are uint8 224x224x3, ``label`` an
    int (1 = foreground), ``target`` float32[4] raw deltas, ids str.
    """
    if dataset not in DATASETS:
        raise InvalidInput(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; choose train or test")
    stamp = prepared_state(ws)
    folder = builders.dataset_dir(ws.datasets_dir / stamp["build"], dataset)
    return PreparedSplit(builders.open_split(folder, split), dataset, split)


class PreparedSplit(Sequence):
    """A prepared split as plain Python/NumPy records (wraps the tfds ArrayRecord source)."""

    def __init__(self, source: Sequence[dict[str, Any]], dataset: str, split: str):
        self.source = source
        self.dataset = dataset
        self.split = split

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.dataset}/{self.split} has {len(self)} records, not {index}")
        return _record(self.source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batch read (grain uses this): one call into ArrayRecord for many records."""
        n = len(self)
        idx = [int(i) + n if int(i) < 0 else int(i) for i in indices]
        if any(not 0 <= i < n for i in idx):
            raise IndexError(f"index out of range for {self.dataset}/{self.split} ({n} records)")
        getitems = getattr(self.source, "__getitems__", None)
        raw = getitems(idx) if getitems else [self.source[i] for i in idx]
        return [_record(r) for r in raw]

    def __repr__(self) -> str:
        return f"PreparedSplit({self.dataset}/{self.split}, {len(self)} records)"


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8")
        elif key == "label":
            out[key] = int(value)
        elif key == "target":
            out[key] = np.asarray(value, np.float32)
        else:
            out[key] = value
    return out


# -- building ---------------------------------------------------------------------------------
CropBox = tuple[float, float, float, float]


@dataclass
class _Snapshot:
    fingerprint: str
    images: list[ImageRecord]
    boxes: dict[str, CropBox]
    triplets: list[tuple[str, str, str]]
    root: Path


def _snapshot(ws: Workspace) -> _Snapshot:
    """Everything prepare reads from the store, consistent with one fingerprint."""
    with Store(ws.store_path) as store:
        for _ in range(5):
            fingerprint = store.annotations_fingerprint()
            images = store.list_images()
            boxes = {k: v.box.as_tuple() for k, v in store.boxes().items()}
            triplets = [(t.reference, t.positive, t.negative) for t in store.list_triplets()]
            if store.annotations_fingerprint() == fingerprint:
                return _Snapshot(fingerprint, images, boxes, triplets, ws.root)
    raise Conflict("the annotations kept changing while prepare read them; try again")


def _image_path(snap: _Snapshot, rec: ImageRecord) -> Path:
    path = Path(rec.path)
    return path if path.is_absolute() else snap.root / path


def _check_size(path: Path, rec: ImageRecord) -> None:
    if image_size(path) != (rec.width, rec.height):
        raise InvalidInput(
            f"{path} changed size since it was registered; re-run `tiefjax init` on the workspace"
        )


CropRecord = tuple[int, Deltas, frozenset[str], bytes]  # label, target, sets, encoded


def _crop_records(
    rec: ImageRecord, path: Path, box: CropBox, config: PrepareConfig
) -> list[CropRecord]:
    """(label, target, crop sets, encoded pixels) of every crop of one image."""
    _check_size(path, rec)
    specs = sample_crops(rec.id, rec.width, rec.height, box, config)
    if not specs:
        return []
    img = load_rgb(path, target_size=decode_size(rec.width, rec.height, config), name=rec.id)
    return [
        (
            spec.label,
            spec.target,
            spec.sets,
            encode_image(px, config.image_format, config.jpeg_quality),
        )
        for spec, px in zip(specs, render_crops(img, specs), strict=True)
    ]


def _product_record(
    rec: ImageRecord, path: Path, box: CropBox | None, config: PrepareConfig
) -> bytes:
    """The encoded 224x224 product crop (box, or whole photo) of one image."""
    _check_size(path, rec)
    size = (rec.width, rec.height)
    img = load_rgb(path, target_size=product_size(rec.width, rec.height, box), name=rec.id)
    pixels = product_crop(img, box, size)
    return encode_image(pixels, config.image_format, config.jpeg_quality)


def _reason(err: BaseException) -> str:
    """One-line reason for a photo that cannot be used; programming errors propagate."""
    if isinstance(err, TiefjaxError):
        return str(err)
    if isinstance(err, OSError):
        return f"cannot read the file ({err.strerror or err})"
    raise err


def _bar(total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True)


@dataclass
class _Entry:
    """One image's crops in the spool; ``sizes``: how many of them each crop set takes."""

    index: int
    image_id: str
    sizes: dict[str, int]


class _Build:
    """One build into folder ``out``: crop pass, crop sets, triplets, summary."""

    def __init__(self, out: Path, snap: _Snapshot, config: PrepareConfig, build: str):
        self.out, self.snap, self.config, self.build = out, snap, config, build
        self.records = {r.id: r for r in snap.images}
        self.boxed = [r for r in snap.images if r.id in snap.boxes]
        self.split = {r.id: split_of(r.id, config.test_fraction, config.seed) for r in snap.images}
        self.counts: dict[str, dict[str, dict[str, int]]] = {
            name: {s: {"total": 0} for s in SPLITS} for name in DATASETS
        }
        for s in SPLITS:
            self.counts["classification"][s].update(foreground=0, background=0)
        self.skipped: list[tuple[str, str]] = []
        self.entries: dict[str, list[_Entry]] = {s: [] for s in SPLITS}
        self.reg_n, self.reg_sum, self.reg_sq = 0, np.zeros(4), np.zeros(4)
        self.triplets_kept = 0
        self.crops = 0
        self.crop_seconds = 0.0

    def run(self) -> tuple[PrepareSummary, dict[str, Any] | None]:
        start = time.perf_counter()
        with Spool(self.out / "crops.spool") as spool:
            self._crop_pass(spool)
            self.crop_seconds = time.perf_counter() - start
            self._write_crop_set(CLASSIFICATION, spool)
            self._write_crop_set(REGRESSION, spool)
        (self.out / "crops.spool").unlink()
        with Spool(self.out / "products.spool") as products:
            self._write_triplets(products)
        (self.out / "products.spool").unlink()
        return self._summary(time.perf_counter() - start)

    # crops: each photo decoded once; its crops go to the spool for both crop sets
    def _crop_pass(self, spool: Spool) -> None:
        snap, config = self.snap, self.config

        def crop_one(rec: ImageRecord) -> list[CropRecord]:
            return _crop_records(rec, _image_path(snap, rec), snap.boxes[rec.id], config)

        with _bar(len(self.boxed), "cropping", " img") as bar:
            for rec, result in prefetch(crop_one, self.boxed, _WORKERS, depth=2 * _WORKERS):
                bar.update(1)
                if isinstance(result, BaseException):
                    self.skipped.append((rec.id, _reason(result)))
                    continue
                self._add(spool, rec.id, result)

    def _add(self, spool: Spool, image_id: str, crops: list[CropRecord]) -> None:
        s = self.split[image_id]
        labels = [label for label, _, sets, _ in crops if CLASSIFICATION in sets]
        fg = sum(label == FOREGROUND for label in labels)
        targets = [target for _, target, sets, _ in crops if REGRESSION in sets]
        sizes = {CLASSIFICATION: len(labels), REGRESSION: len(targets)}
        self.entries[s].append(_Entry(spool.append(crops), image_id, sizes))
        self.crops += len(crops)
        self.counts[CLASSIFICATION][s]["total"] += len(labels)
        self.counts[CLASSIFICATION][s]["foreground"] += fg
        self.counts[CLASSIFICATION][s]["background"] += len(labels) - fg
        self.counts[REGRESSION][s]["total"] += len(targets)
        if s == "train" and targets:
            values = np.asarray(targets, np.float64)
            self.reg_n += len(values)
            self.reg_sum += values.sum(0)
            self.reg_sq += (values**2).sum(0)

    def _write_crop_set(self, name: str, spool: Spool) -> None:
        regression = name == REGRESSION
        total = sum(self.counts[name][s]["total"] for s in SPLITS)
        with _bar(total, f"writing {name}", " crops") as bar:

            def shard(group: list[_Entry]) -> Iterator[builders.KeyExample]:
                for entry in group:
                    for j, (label, target, sets, data) in enumerate(spool[entry.index]):
                        if name not in sets:
                            continue
                        bar.update(1)
                        example: dict[str, Any] = {"image": data, "image_id": entry.image_id}
                        if regression:
                            example["target"] = np.asarray(target, np.float32)
                        else:
                            example["label"] = label
                        yield f"{entry.image_id}/{j}", example

            def weight(entry: _Entry) -> int:
                return entry.sizes[name]

            shards: dict[str, list[builders.ShardFn]] = {
                s: [
                    functools.partial(shard, group)
                    for group in chunk_by_weight(self.entries[s], weight, RECORDS_PER_SHARD)
                ]
                for s in SPLITS
            }
            builders.write_dataset(name, self.out, shards, self.config.image_format)

    # triplets: one product crop per image involved, then the (reference, pos, neg) records
    def _write_triplets(self, products: Spool) -> None:
        snap, config = self.snap, self.config
        bad = {image_id for image_id, _ in self.skipped}
        usable = [t for t in snap.triplets if not set(t) & bad]
        needed = sorted({i for t in usable for i in t})
        where: dict[str, int] = {}

        def product_one(image_id: str) -> bytes:
            rec = self.records[image_id]
            return _product_record(rec, _image_path(snap, rec), snap.boxes.get(image_id), config)

        with _bar(len(needed), "product crops", " img") as bar:
            for image_id, result in prefetch(product_one, needed, workers=_WORKERS):
                bar.update(1)
                if isinstance(result, BaseException):
                    self.skipped.append((image_id, _reason(result)))
                else:
                    where[image_id] = products.append(result)
        by_split: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
        for t in usable:
            if all(i in where for i in t):
                by_split[self.split[t[0]]].append(t)
        for s in SPLITS:
            self.counts["triplets"][s]["total"] = len(by_split[s])
        self.triplets_kept = sum(len(v) for v in by_split.values())

        with _bar(self.triplets_kept, "writing triplets", " triplets") as bar:

            def shard(group: list[tuple[str, str, str]]) -> Iterator[builders.KeyExample]:
                for ids in group:
                    bar.update(1)
                    example: dict[str, Any] = {}
                    for key, image_id in zip(
                        ("reference", "positive", "negative"), ids, strict=True
                    ):
                        example[key] = products[where[image_id]]
                        example[f"{key}_id"] = image_id
                    yield "/".join(ids), example

            per_shard = max(1, RECORDS_PER_SHARD // 3)
            shards: dict[str, list[builders.ShardFn]] = {
                s: [
                    functools.partial(shard, group)
                    for group in chunk_by_weight(by_split[s], lambda _: 1, per_shard)
                ]
                for s in SPLITS
            }
            builders.write_dataset("triplets", self.out, shards, config.image_format)

    def _summary(self, seconds: float) -> tuple[PrepareSummary, dict[str, Any] | None]:
        reg_stats = None
        if self.reg_n:
            mean = self.reg_sum / self.reg_n
            std = np.sqrt(np.maximum(self.reg_sq / self.reg_n - mean**2, 0.0))
            std = np.where(std > 1e-6, std, 1.0)  # a constant coordinate: leave it unscaled
            reg_stats = {"mean": mean.tolist(), "std": std.tolist(), "count": self.reg_n}
        notes = [
            f"the {s} split has no images with a box (test_fraction={self.config.test_fraction})"
            for s in SPLITS
            if not self.entries[s]
        ]
        left_out = len(self.snap.triplets) - self.triplets_kept
        if left_out:
            notes.append(f"{left_out} triplet(s) left out because an image could not be read")
        summary = PrepareSummary(
            rebuilt=True,
            build=self.build,
            fingerprint=self.snap.fingerprint,
            images=len(self.snap.images),
            with_box=len(self.boxed),
            without_box=len(self.snap.images) - len(self.boxed),
            split_images={s: len(self.entries[s]) for s in SPLITS},
            counts=self.counts,
            triplets_left_out=left_out,
            skipped=self.skipped,
            regression_mean=reg_stats["mean"] if reg_stats else None,
            regression_std=reg_stats["std"] if reg_stats else None,
            seconds=round(seconds, 3),
            crops_per_second=round(self.crops / max(self.crop_seconds, 1e-9), 1),
            notes=notes,
        )
        return summary, reg_stats


# -- stamp, builds and lock -------------------------------------------------------------------
def _read_stamp(ws: Workspace) -> dict[str, Any] | None:
    path = ws.datasets_dir / STAMP_NAME
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable stamp: treated as "not prepared", rebuilt next time
    return stamp if isinstance(stamp, dict) and "build" in stamp else None


def _remove_builds(ws: Workspace, keep: str | None) -> None:
    """Delete every build folder (finished or partial) except ``keep``."""
    for child in ws.datasets_dir.iterdir():
        name = child.name
        if (
            child.is_dir()
            and name != keep
            and (
                name.startswith("build-")
                or (name.startswith(".build-") and name.endswith(".partial"))
            )
        ):
            shutil.rmtree(child, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(ws: Workspace) -> Iterator[None]:
    """One prepare per workspace at a time (a second one is told so instead of corrupting)."""
    with open(ws.datasets_dir / ".prepare.lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise Conflict(
                f"another `tiefjax prepare` is running on {ws.root}; wait for it to finish"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
