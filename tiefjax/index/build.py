"""``tiefjax index``: encode the catalog, build one index per mode, swap it in atomically.

Layout under ``ws.index_dir``::

    CURRENT                    name of the live build (replaced atomically)
    index-<utc time>/          one finished build
        build.json             when, what, settings, measured recall per mode
        rows/                  row -> id, sha256, box, box source, probability as memory-mapped
                               columns (tiefjax/index/row_table.py)
        features.npy           per-location-normalised encoder maps (float16, memmap)
        unsupervised/          vectors.npy, projection.npy, index.json, scann/, neighbours.npy
        supervised/            the same for the ranking net's descriptor (when trained)
    .tmp-<fingerprint>/        a build in progress: features.npy and chunks/ being encoded,
                               part-<i>/ per process of a multi-process build

A build writes everything into the temporary folder, renames it to ``index-<time>`` and then
replaces ``CURRENT``: readers see the old index or the new one, never half of one. The
temporary folder is named after what it encodes (the catalog's images and boxes, the encoder,
the locator, the ranking net, the process count, the chunk size): a killed build leaves it
behind and the next build of the same catalog resumes from its finished chunks, while a folder
that matches nothing current is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tiefjax import distributed
from tiefjax.errors import InvalidInput, NotFound
from tiefjax.index.config import IndexConfig
from tiefjax.index.descriptors import Projection, reduce_descriptors
from tiefjax.index.encode import (
    FEATURE_DIM,
    FEATURES_DTYPE,
    Catalog,
    EncodeResult,
    FeatureEncoder,
    Previous,
    Row,
    ScaledRows,
    detections_from_json,
    detections_to_json,
    encode_catalog,
    encoder_fingerprint,
    load_feature_encoder,
    load_locator,
    trained_fingerprint,
    unsupervised_rows,
)
from tiefjax.index.row_table import FOLDER as ROWS_FOLDER
from tiefjax.index.row_table import RowTable
from tiefjax.index.scann_index import VectorIndex, choose_params, read_blocks, split_queries
from tiefjax.workspace import Workspace, atomic_write_text

MODES = ("unsupervised", "supervised")
CURRENT = "CURRENT"
NEIGHBOURS_DTYPE = np.dtype([("id", np.int32), ("score", np.float32)])


@dataclass
class IndexReport:
    """What ``build_index`` did, for people (``summary()``) and scripts (``asdict``)."""

    path: str
    built_at: str
    images: int
    encoded: int
    reused: int
    located: int
    errors: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0  # rows taken from the chunks a killed build had finished
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    supervised_note: str = ""

    def summary(self) -> str:
        lines = [
            f"indexed {self.images} image(s) in {self.seconds:.1f}s: {self.encoded} encoded, "
            f"{self.reused} unchanged re-used, {self.located} located, "
            f"{len(self.errors)} skipped"
            + (f", {self.resumed} from an interrupted build" if self.resumed else "")
        ]
        for image_id, message in self.errors[:20]:
            lines.append(f"  skipped {image_id}: {message}")
        for mode, m in self.modes.items():
            lines.append(
                f"  {mode}: {m['kind']} index, dim {m['dim']}, recall@10 vs exact "
                f"{m['recall_at_10']:.3f}, reduction recall@10 vs full "
                f"{m['reduction_recall_at_10']:.3f}"
            )
            lines += [f"  {mode}: warning: {w}" for w in m.get("warnings", [])]
        if self.supervised_note:
            lines.append(f"  supervised: {self.supervised_note}")
        lines.append(f"  index: {self.path}")
        return "\n".join(lines)


# -- build folders --------------------------------------------------------------------------------
def current_build(ws: Workspace) -> Path | None:
    """The live build folder, or None when no index was built yet."""
    pointer = ws.index_dir / CURRENT
    try:
        name = pointer.read_text().strip()
    except OSError:
        return None
    path = ws.index_dir / name
    return path if (path / "build.json").is_file() else None


@contextlib.contextmanager
def _build_lock(ws: Workspace) -> Iterator[None]:
    ws.index_dir.mkdir(parents=True, exist_ok=True)
    with open(ws.index_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("tiefjax index: waiting for another index build to finish", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cleanup(ws: Workspace, keep: int, resume: str | None = None) -> None:
    """Remove temporary builds other than ``resume`` (the one this build continues) and
    finished builds beyond the newest ``keep``."""
    for tmp in ws.index_dir.glob(".tmp-*"):
        if tmp.name != resume:
            shutil.rmtree(tmp, ignore_errors=True)
    live = current_build(ws)
    builds = sorted(p for p in ws.index_dir.glob("index-*") if p.is_dir())
    for old in builds[: max(0, len(builds) - max(1, keep))]:
        if old != live:
            shutil.rmtree(old, ignore_errors=True)


def _previous(build: Path | None, sub: str = "") -> Previous | None:
    if build is None:
        return None
    folder = build / sub if sub else build
    try:
        meta = json.loads((build / "build.json").read_text())
        rows = RowTable.open(folder, hits=False)  # read, never served from here
        features = np.load(folder / "features.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if features.shape != (len(rows), FEATURE_DIM):
        return None
    encoder = meta.get("ranking_encoder" if sub else "encoder", "")
    trim = bool(meta.get("config", {}).get("trim_borders", False))
    return Previous(rows, features, encoder, meta.get("locator"), trim)


# -- supervised descriptors -----------------------------------------------------------------------
def load_ranking(ws: Workspace) -> Any | None:
    """The trained ranking net (``Trained``) or None when it was not trained yet."""
    from tiefjax.train.artifacts import load_trained

    try:
        return load_trained(ws, "ranking")
    except NotFound:
        return None


SUPERVISED_MISSING = (
    "supervised search needs a trained ranking net: run `tiefjax train {ws} ranking`, "
    "then `tiefjax index {ws}`"
)


def make_ranking_fn(trained: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(features (B, 30976) normalised maps) -> (B, D) supervised descriptors``, on every
    local device."""
    import jax.numpy as jnp

    from tiefjax.inference import ShardedApply
    from tiefjax.nets.alexnet import apply_params

    net = trained.head

    def apply(params: Any, rows: Any) -> Any:
        fmap = rows.astype(jnp.float32).reshape(rows.shape[0], 11, 11, -1)
        return apply_params(net, params, fmap)

    ranking = ShardedApply(apply, trained.params, cap=256)

    def fn(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.float32)
        return ranking(rows) if len(rows) else np.zeros((0, FEATURE_DIM), np.float32)

    return fn


def _supervised_descriptors(features: np.ndarray, trained: Any, path: Path) -> np.ndarray:
    fn = make_ranking_fn(trained)
    out = None
    for s in range(0, len(features), 1024):
        block = fn(features[s : s + 1024])
        if out is None:
            out = np.lib.format.open_memmap(
                path, mode="w+", dtype=FEATURES_DTYPE, shape=(len(features), block.shape[1])
            )
        out[s : s + len(block)] = block
    if out is None:
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=FEATURES_DTYPE, shape=(0, FEATURE_DIM)
        )
    out.flush()
    return np.load(path, mmap_mode="r")


# -- one mode -------------------------------------------------------------------------------------
def _build_mode(
    full: Any, folder: Path, cfg: IndexConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    """Reduce, index, tune and measure one mode's descriptors into ``folder``: settings are
    chosen on one sample of catalog queries, the recall reported is measured on another.
    Whatever an interrupted attempt left in ``folder`` (a resumed build) is removed first: a
    stale ``projection.npy`` would be applied to every query."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    n = len(full)
    t0 = time.perf_counter()
    queries = split_queries(n, cfg.recall_sample)
    reduced = reduce_descriptors(
        full,
        method=cfg.reduction,
        dim=cfg.dim,
        min_recall=cfg.min_reduction_recall,
        fit_sample=cfg.fit_sample,
        queries=queries,
        max_bytes=cfg.vectors_budget_mb * 2**20,
    )
    if reduced.projection.basis is not None:
        np.save(folder / "projection.npy", reduced.projection.basis)
    index = VectorIndex.build(reduced.vectors, choose_params(n, cfg))
    reduction_recall, tried = reduced.recall_at_10, reduced.tried
    del reduced  # the vectors are the index's alone now: saving them frees them
    index.save_vectors(folder)
    tuned = not (cfg.leaves_to_search or cfg.reorder)
    if tuned:
        index.info["tuning_recall_at_10"] = round(
            index.autotune(cfg.target_recall, rows=queries.tune), 4
        )
    recall = index.measure_recall(rows=queries.report)
    warnings = recall_warnings(recall, reduction_recall, cfg, tuned)
    index.info.update(
        {
            "recall_at_10": round(recall, 4),
            "reduction_recall_at_10": round(reduction_recall, 4),
            "reduction_tried": tried,
            "recall_queries": [len(queries.tune), len(queries.report)],
            "full_dim": int(full.shape[1]),
        }
    )
    _save_neighbours(index, cfg.neighbours_k, folder / "neighbours.npy")
    index.save(folder)  # last: ScaNN's serialisation keeps copies of its own
    info = {
        "kind": index.params.kind,
        "dim": index.dim,
        "recall_at_10": round(recall, 4),
        "reduction_recall_at_10": round(reduction_recall, 4),
        "seconds": round(time.perf_counter() - t0, 2),
        "warnings": warnings,
    }
    log(
        f"{folder.name}: {info['kind']} index over {n} x {info['dim']}, recall@10 vs exact "
        f"{recall:.3f} (reduction kept {reduction_recall:.3f} of full-dim recall@10)"
    )
    for warning in warnings:
        log(f"{folder.name}: warning: {warning}")
    return info


def recall_warnings(
    recall: float, reduction_recall: float, cfg: IndexConfig, tuned: bool
) -> list[str]:
    """What a build whose measured recall falls below its targets should tell its user, naming
    the setting to change; empty when both targets are met."""
    out = []
    if reduction_recall < cfg.min_reduction_recall:
        out.append(
            f"reduction recall@10 vs full {reduction_recall:.3f} is below [index] "
            f"min_reduction_recall {cfg.min_reduction_recall}: raise [index] dim (now {cfg.dim}), "
            "min_reduction_recall (it is tuned on other queries) or vectors_budget_mb (now "
            f'{cfg.vectors_budget_mb}), or set [index] reduction = "none"'
        )
    if recall < cfg.target_recall:
        fix = (
            "raise [index] target_recall (it is tuned on other queries) or set [index] kind = "
            '"brute_force"'
            if tuned
            else "raise [index] leaves_to_search and reorder, or set both to 0 to tune them"
        )
        out.append(
            f"recall@10 vs exact {recall:.3f} is below [index] target_recall "
            f"{cfg.target_recall}: {fix}"
        )
    return out


def _save_neighbours(index: VectorIndex, k: int, path: Path) -> None:
    """Top-``k`` neighbours of every row, itself excluded, as a structured (N, k) id/score
    ``.npy`` at ``path``, written a block of rows at a time (a million rows' lists are 400 MB
    that need not be in memory at once)."""
    n = index.size
    k_eff = max(0, min(k, n - 1))
    with open(path, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(NEIGHBOURS_DTYPE), "fortran_order": False}
        np.lib.format.write_array_header_2_0(f, {**header, "shape": (n, k_eff)})
        for s, queries in read_blocks(index.vectors, 1024):
            ids, scores = index.search(queries, k_eff + 1)
            out = np.zeros((len(queries), k_eff), NEIGHBOURS_DTYPE)
            out["id"], out["score"] = -1, -np.inf
            for i in range(len(queries)):
                keep = (ids[i] != s + i) & (ids[i] >= 0)
                kid, ksc = ids[i][keep][:k_eff], scores[i][keep][:k_eff]
                out["id"][i, : len(kid)], out["score"][i, : len(kid)] = kid, ksc
            f.write(out.tobytes())
        f.flush()
        os.fsync(f.fileno())


# -- the build ------------------------------------------------------------------------------------
def build_index(
    ws: Workspace | str | os.PathLike[str],
    config: IndexConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    encoder: FeatureEncoder | None = None,
    locator: Any = "auto",
) -> IndexReport:
    """Encode the catalog (incrementally) and build the unsupervised (+ supervised) indexes.

    The previous index stays live until the new one is complete. Raises InvalidInput for an
    empty catalog. In a multi-process run each process encodes its share of the catalog into
    its own part of the build folder; after a barrier process 0 merges the parts, writes the
    store, builds the indexes and swaps the build in, and the others report it.
    """
    distributed.start()  # a multi-process script joins before anything touches JAX
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    cfg = config or ws.section("index", IndexConfig)
    distributed.check_same("index settings", json.dumps(asdict(cfg), sort_keys=True))
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    # everything the build reads from the workspace, once: the catalog and the models
    catalog = Catalog.read(ws)
    if not catalog.images:
        raise InvalidInput(
            f"the catalog of {ws.root} has no images; add photos with "
            f"`tiefjax init {ws.root} --images DIR`, then run `tiefjax index {ws.root}`"
        )
    encoder = encoder or load_feature_encoder(ws, cfg.batch_size)
    located = load_locator(ws, cfg.locate) if locator == "auto" else locator
    ranking = load_ranking(ws)
    ranking_fp = trained_fingerprint(ws, "ranking")
    me, count = distributed.process_index(), distributed.process_count()
    primary = me == 0
    with _build_lock(ws) if primary else contextlib.nullcontext():
        work = _work_name(catalog, cfg, encoder, located, ranking_fp, count) if primary else None
        tmp = ws.index_dir / distributed.share("index-work", work)
        if primary:  # a killed build's folder is kept when this build would redo its work
            _cleanup(ws, cfg.keep_builds, resume=tmp.name)
            tmp.mkdir(parents=True, exist_ok=True)
        live = current_build(ws)
        stamp = distributed.share("index-stamp", datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ"))
        distributed.barrier("index-started")
        part = tmp / f"part-{me}" if count > 1 else tmp
        enc = encode_catalog(
            catalog,
            part,
            encoder,
            located,
            cfg,
            _previous(live),
            progress=progress,
            log=log,
            shard=(me, count),
            on_detections=_store_detections(ws) if primary else None,
        )
        if count > 1:
            _save_part(part, enc)
            distributed.barrier("index-encoded")
        report = None
        if primary:
            if count > 1:
                enc = _merge_parts(tmp, count)
            if not enc.rows:
                raise InvalidInput(
                    f"none of the {len(enc.errors)} catalog image(s) could be read; "
                    "check the files listed above"
                )
            report = _finish(ws, cfg, tmp, live, enc, stamp, log, catalog, ranking)
        final = ws.index_dir / f"index-{stamp}"
        if primary:
            _swap_in(ws, tmp, final, cfg.keep_builds)
        distributed.barrier("index-built")
    if report is None:  # not process 0: report the build it took part in
        report = _part_report(final, enc)
    report.path = str(final)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _swap_in(ws: Workspace, tmp: Path, final: Path, keep: int) -> None:
    """Rename the finished ``tmp`` to ``final`` and point ``CURRENT`` at it (atomically)."""
    _drop_work(tmp)
    os.replace(tmp, final)
    _fsync_dir(ws.index_dir)
    atomic_write_text(ws.index_dir / CURRENT, final.name + "\n")
    _cleanup(ws, keep)


def build_from_descriptors(
    ws: Workspace,
    descriptors: np.ndarray,
    rows: RowTable,
    config: IndexConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> IndexReport:
    """Build and swap in an unsupervised-only index over ``descriptors`` (N, D unit rows, may
    be a memory map) for the catalog ``rows`` (a table, which may be memory-mapped too: a
    million :class:`Row` objects would hold half a gigabyte), skipping the encoder: the hook
    ``scripts/bench/scale.py`` uses to time index builds of a million synthetic descriptors.
    Its ``build.json`` names the encoder "external-descriptors": not the workspace's."""
    if len(rows) != len(descriptors):
        raise InvalidInput(f"{len(rows)} rows for {len(descriptors)} descriptors")
    cfg = config or ws.section("index", IndexConfig)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    with _build_lock(ws):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        tmp = ws.index_dir / f".tmp-descriptors-{stamp}"
        tmp.mkdir(parents=True)
        rows.save(tmp / ROWS_FOLDER, replace=True)
        built_at = datetime.now(UTC).isoformat(timespec="seconds")
        report = IndexReport(str(tmp), built_at, len(rows), 0, 0, 0)
        report.modes["unsupervised"] = _build_mode(descriptors, tmp / "unsupervised", cfg, log)
        meta = {
            "built_at": built_at,
            "name": f"index-{stamp}",
            "images": len(rows),
            "encoder": "external-descriptors",
            "config": asdict(cfg),
            "modes": report.modes,
        }
        atomic_write_text(tmp / "build.json", json.dumps(meta, indent=2) + "\n")
        final = ws.index_dir / f"index-{stamp}"
        _swap_in(ws, tmp, final, cfg.keep_builds)
    report.path = str(final)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _work_name(
    catalog: Catalog,
    cfg: IndexConfig,
    encoder: FeatureEncoder,
    locator: tuple[Any, str] | None,
    ranking_fp: str,
    count: int,
) -> str:
    """``.tmp-<fingerprint>``: the temporary folder of a build of the catalog as it is now
    (images, their hashes and annotated boxes) with these encoder, locator and ranking net, so
    that the next build resumes a killed one exactly when it would encode the same things."""
    state = {
        "images": [(r.id, r.sha256) for r in catalog.images],
        "boxes": sorted(catalog.boxes.items()),
        "encoder": encoder.fingerprint,
        "locator": "none" if locator is None else str(locator[1]),
        "ranking": ranking_fp,
        "processes": count,
        "chunk_size": cfg.chunk_size,
    }
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    return f".tmp-{digest[:20]}"


def _store_detections(ws: Workspace) -> Callable[[list[Any]], None]:
    """Writes a finished chunk's new detections to the store (process 0 is its only writer)."""
    from tiefjax.store import Store

    def write(detections: list[Any]) -> None:
        with Store(ws.store_path) as store:
            store.put_detections(detections)

    return write


def _drop_work(tmp: Path) -> None:
    """Remove what only a resumed build needs (chunk records and working features, the
    processes' parts) from a build about to be swapped in."""
    for work in [*tmp.glob("part-*"), *tmp.glob("chunks"), *tmp.glob("*/chunks")]:
        if work.exists():  # not inside a part removed before it
            shutil.rmtree(work)


def _save_part(part: Path, enc: EncodeResult) -> None:
    """A process's encoded share: rows, detections and errors next to its ``features.npy``."""
    part_json = {
        "rows": [r.to_json() for r in enc.rows],
        "detections": detections_to_json(enc.detections),
        "errors": enc.errors,
        "counts": [enc.encoded, enc.reused, enc.located, enc.resumed],
        "seconds": enc.seconds,
        "encoder": [enc.encoder_source, enc.encoder_fingerprint],
    }
    atomic_write_text(part / "part.json", json.dumps(part_json))


def _merge_parts(tmp: Path, count: int) -> EncodeResult:
    """Process 0: the parts of every process as one result in catalog (id) order, their
    features in one ``features.npy`` (the parts stay until the build is swapped in)."""
    rows: list[tuple[Row, int, int]] = []  # (row, part, row in part)
    merged = EncodeResult([], tmp / "features.npy")
    arrays = []
    for p in range(count):
        meta = json.loads((tmp / f"part-{p}" / "part.json").read_text(encoding="utf-8"))
        arrays.append(np.load(tmp / f"part-{p}" / "features.npy", mmap_mode="r"))
        rows += [(Row.from_json(r), p, i) for i, r in enumerate(meta["rows"])]
        merged.detections += detections_from_json(meta["detections"])
        merged.errors += [tuple(e) for e in meta["errors"]]
        encoded, reused, located, resumed = meta["counts"]
        merged.encoded, merged.reused = merged.encoded + encoded, merged.reused + reused
        merged.located, merged.resumed = merged.located + located, merged.resumed + resumed
        merged.seconds = max(merged.seconds, meta["seconds"])
        merged.encoder_source, merged.encoder_fingerprint = meta["encoder"]
    rows.sort(key=lambda r: r[0].id)  # the order one process writes: the store's, by id
    features = np.lib.format.open_memmap(
        merged.features_path, mode="w+", dtype=FEATURES_DTYPE, shape=(len(rows), FEATURE_DIM)
    )
    for i, (_, p, j) in enumerate(rows):
        features[i] = arrays[p][j]
    features.flush()
    del features, arrays
    merged.rows = [r for r, _, _ in rows]
    return merged


def _part_report(build: Path, enc: EncodeResult) -> IndexReport:
    """What a process other than 0 did (its share) and the build process 0 made of it."""
    meta = json.loads((build / "build.json").read_text(encoding="utf-8"))
    report = IndexReport(
        str(build), meta["built_at"], meta["images"], enc.encoded, enc.reused, enc.located
    )
    report.errors, report.modes, report.resumed = enc.errors, meta.get("modes", {}), enc.resumed
    return report


def _finish(
    ws: Workspace,
    cfg: IndexConfig,
    tmp: Path,
    live: Path | None,
    enc: EncodeResult,
    stamp: str,
    log: Callable[[str], None],
    catalog: Catalog,
    trained: Any | None,
) -> IndexReport:
    """Process 0's part of a build: store detections, write the rows, build each mode's index
    (``trained``: the ranking net, None when it was not trained) and ``build.json``."""
    from tiefjax.store import Store

    if enc.detections:
        with Store(ws.store_path) as store:
            store.put_detections(enc.detections)
    features = np.load(enc.features_path, mmap_mode="r")
    RowTable.from_rows(enc.rows).save(tmp / ROWS_FOLDER, replace=True)
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = IndexReport(
        str(tmp), built_at, len(enc.rows), enc.encoded, enc.reused, enc.located, enc.errors
    )
    report.resumed = enc.resumed
    report.modes["unsupervised"] = _build_mode(
        unsupervised_rows(features), tmp / "unsupervised", cfg, log
    )
    meta: dict[str, Any] = {
        "built_at": built_at,
        "name": f"index-{stamp}",
        "images": len(enc.rows),
        "encoder": enc.encoder_fingerprint or encoder_fingerprint(ws),
        "encoder_source": enc.encoder_source,
        "locator": trained_fingerprint(ws, "classifier", "regressor"),
        "ranking": None,
        "ranking_encoder": None,
        "config": asdict(cfg),
        "encode_seconds": round(enc.seconds, 2),
        "errors": [{"id": i, "error": m} for i, m in enc.errors],
    }
    if trained is None:
        report.supervised_note = SUPERVISED_MISSING.format(ws=ws.root)
    else:
        meta["ranking"] = trained_fingerprint(ws, "ranking")
        sup_features = features
        if getattr(trained, "encoder_params", None) is not None:
            # ranking fine-tuned the encoder: encode the same crops with that encoder too
            fp = "ranking-" + meta["ranking"]
            sub = encode_catalog(
                catalog,
                tmp / "ranking_encoder",
                FeatureEncoder(trained.encoder_params, fp, cfg.batch_size, "ranking"),
                None,
                cfg,
                _previous(live, "ranking_encoder"),
                boxes_from={r.id: r for r in enc.rows},
                progress=False,
                log=log,
            )
            RowTable.from_rows(sub.rows, hits=False).save(  # re-used by the next build only
                tmp / "ranking_encoder" / ROWS_FOLDER, replace=True
            )
            if len(sub.rows) != len(enc.rows):
                raise InvalidInput("the catalog changed while it was being indexed; run again")
            meta["ranking_encoder"] = fp
            sup_features = np.load(sub.features_path, mmap_mode="r")
        desc = _supervised_descriptors(sup_features, trained, tmp / "supervised_descriptors.npy")
        report.modes["supervised"] = _build_mode(
            ScaledRows(desc, 1.0), tmp / "supervised", cfg, log
        )
        del desc
        (tmp / "supervised_descriptors.npy").unlink()
    meta["modes"] = report.modes
    (tmp / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    return report


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_projection(folder: Path, full_dim: int) -> Projection:
    path = folder / "projection.npy"
    basis = np.load(path) if path.exists() else None
    return Projection(basis, full_dim)
