"""Search the catalog: ``Searcher.load(ws).search(image, k=10)`` from a script, notebook or server.

A query is a catalog image id, an image file path, image bytes or a PIL image. Photos are
located (when the locator is trained), cropped, encoded and projected exactly like catalog
images at build time; a catalog image (by id, or a file/bytes with the same content) uses its
stored descriptor. It is left out of its own results unless ``include_self``.
``search_many`` encodes many uploads in one batched encoder call (the server micro-batches into
it). All methods are thread-safe; ``reload_if_changed`` picks up a newer build.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tiefjax.copy_check import FINE_SIDE, CatalogPhoto, catalog_photo, copy_scores
from tiefjax.errors import Conflict, InvalidInput, NotFound, TiefjaxError
from tiefjax.images import (
    float_box,
    link_outside,
    load_rgb,
    load_rgb_scaled,
    scale_box,
    whole_box,
    window_of,
)
from tiefjax.index.build import (
    CURRENT,
    MODES,
    SUPERVISED_MISSING,
    current_build,
    load_projection,
    load_ranking,
    make_ranking_fn,
)
from tiefjax.index.config import IndexConfig
from tiefjax.index.descriptors import Projection
from tiefjax.index.encode import (
    FEATURE_DIM,
    FeatureEncoder,
    Row,
    encoder_fingerprint,
    load_feature_encoder,
    load_locator,
)
from tiefjax.index.row_table import IdList, RowTable, served_array
from tiefjax.index.scann_index import VectorIndex, l2_normalize
from tiefjax.nets.alexnet import PATCH, WINDOW
from tiefjax.workspace import Workspace

Query = Any  # str id | path | bytes | PIL.Image.Image | PreparedQuery
_log = logging.getLogger("tiefjax.search")


@dataclass(slots=True)
class Hit:
    """A catalog image found, its score, and its row in the index build named ``build`` (-1:
    not known), so what the index holds of it is read without looking its id up again. Not
    frozen: a frozen dataclass's ``__init__`` cost 1.5 µs against 0.4, ten of them per
    similar-by-id request."""

    id: str
    score: float
    row: int = field(default=-1, compare=False)
    build: str = field(default="", compare=False)


@dataclass(frozen=True)
class SearchResult:
    """One query's answer: the box searched with (pixels of the query image; for a catalog
    image the box it was indexed with), the locator's foreground probability (None when it was
    not located), ``fallback`` (the whole image was used: no locator trained, or nothing
    confident found), where the box came from, and the hits, best first."""

    box: tuple[float, float, float, float]
    probability: float | None
    fallback: bool
    hits: list[Hit]
    mode: str = "unsupervised"
    query_id: str | None = None  # set when the query is a catalog image
    box_source: str = "whole"  # annotation | detection | whole
    #: the catalog photo an uploaded photo is a copy of (the copy check: listed first), and how
    #: well the two aligned (normalised cross-correlation)
    copy_of: str | None = None
    copy_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "mode": self.mode,
            "box": [round(float(v), 2) for v in self.box],
            "box_source": self.box_source,
            "probability": None if self.probability is None else round(self.probability, 4),
            "fallback": self.fallback,
            "copy_of": self.copy_of,
            "copy_score": None if self.copy_score is None else round(self.copy_score, 4),
            "hits": [{"id": h.id, "score": round(h.score, 6)} for h in self.hits],
        }


@dataclass(frozen=True)
class PreparedQuery:
    """A resolved query: a catalog row, or a decoded RGB photo (see :meth:`Searcher.prepare`).

    ``scale`` maps the photo's pixels to the original's when it was decoded smaller (JPEG draft
    mode): ``(original width / width, original height / height)``; result boxes use it, and a
    box too small in the smaller copy is cut again from ``source`` (the encoded file).
    """

    build: str
    position: int | None
    image: Any = None
    scale: tuple[float, float] = (1.0, 1.0)
    source: bytes | None = None


@dataclass
class _ModeState:
    index: VectorIndex
    projection: Projection
    neighbours: np.ndarray  # structured (N, K) id/score


@dataclass
class _State:
    name: str
    path: Path
    meta: dict[str, Any]
    rows: RowTable
    modes: dict[str, _ModeState] = field(default_factory=dict)


def _load_state(ws: Workspace) -> _State:
    build = current_build(ws)
    if build is None:
        raise NotFound(
            f"{ws.root} has no search index yet; build one with `tiefjax index {ws.root}`"
        )
    meta = json.loads((build / "build.json").read_text())
    state = _State(build.name, build, meta, RowTable.open(build))
    for mode in MODES:
        folder = build / mode
        if not (folder / "index.json").is_file():
            continue
        index = VectorIndex.load(folder)
        projection = load_projection(folder, int(index.info.get("full_dim", FEATURE_DIM)))
        neighbours = served_array(folder / "neighbours.npy")
        state.modes[mode] = _ModeState(index, projection, neighbours)
    return state


class Searcher:
    """Similar-image search over the workspace's current index build."""

    def __init__(
        self,
        ws: Workspace,
        state: _State,
        config: IndexConfig,
        encoder: FeatureEncoder | None = None,
    ):
        self.ws = ws
        self.config = config
        self._state = state
        self._lock = threading.RLock()
        self._encoder = encoder
        self._locator: Any = None
        self._locator_fp: str | None = "unloaded"
        self._ranking: tuple[str | None, Any] | None = None
        self._warned_stale = False

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        ws: Workspace | str | os.PathLike[str],
        config: IndexConfig | None = None,
        encoder: FeatureEncoder | None = None,
    ) -> Searcher:
        """Open the current index of ``ws``; NotFound when no index was built yet.

        ``encoder`` replaces the workspace encoder (it must be the one the index was built with).
        """
        ws = ws if isinstance(ws, Workspace) else Workspace(ws)
        ws.require()
        cfg = config or ws.section("index", IndexConfig)
        return cls(ws, _load_state(ws), cfg, encoder)

    def reload_if_changed(self) -> bool:
        """Switch to a newer build if ``tiefjax index`` finished one; True when it did."""
        try:
            name = (self.ws.index_dir / CURRENT).read_text().strip()
        except OSError:
            return False
        if name == self._state.name:
            return False
        with self._lock:
            if name == self._state.name:
                return False
            self._state = _load_state(self.ws)
            self.__dict__.pop("decode_short_side", None)  # [locate] may have changed too
            self._ranking = None
            self._warned_stale = False
        return True

    # -- properties -------------------------------------------------------------------------------
    @property
    def ids(self) -> IdList:
        """Catalog ids in index row order (sorted): a read-only sequence over the build's
        memory-mapped rows, shared by every call (no Python string per id)."""
        return self._state.rows.ids

    @property
    def built_at(self) -> str:
        return str(self._state.meta.get("built_at", ""))

    @property
    def modes(self) -> list[str]:
        return list(self._state.modes)

    @property
    def info(self) -> dict[str, Any]:
        st = self._state
        return {
            "path": str(st.path),
            "built_at": st.meta.get("built_at"),
            "images": len(st.rows),
            "modes": {m: dict(v) for m, v in st.meta.get("modes", {}).items()},
            "encoder_source": st.meta.get("encoder_source"),
            "errors": st.meta.get("errors", []),
            "stale": self._stale_reason(st),
            "warnings": [
                f"{mode}: {w}"
                for mode, m in st.meta.get("modes", {}).items()
                for w in m.get("warnings", [])
            ],
        }

    def row(self, image_id: str) -> Row:
        """The indexed row (box, source, probability) of a catalog image."""
        st = self._state
        return st.rows.row(self._position(st, image_id))

    def indexed_json(self, hits: Sequence[Hit]) -> list[bytes | None]:
        """What the index shows of each hit's image as JSON members (its id, the box it was
        indexed with and where that box came from; None: no longer indexed), read for every hit
        at once: a hit of the current build carries its row, any other is looked up by id (the
        index may have been rebuilt since it was found)."""
        st = self._state
        rows = [
            h.row if h.build == st.name and h.row >= 0 else st.rows.position(h.id) for h in hits
        ]
        found = iter(st.rows.hits_at(np.array([r for r in rows if r is not None], np.int64)))
        return [None if r is None else next(found) for r in rows]

    def neighbour_members(
        self, image_id: str, k: int = 10, mode: str = "unsupervised"
    ) -> tuple[list[float], list[bytes]]:
        """:meth:`neighbours` as their scores and :meth:`indexed_json`, read straight from the
        precomputed lists and the rows' pre-rendered JSON, with no Python object per hit (the
        similar-by-id answer)."""
        st = self._state
        found = self._neighbour_rows(st, image_id, k, mode)
        if found is None:
            hits = self.search(image_id, k, mode).hits
            members = self.indexed_json(hits)  # None: gone in a rebuild since the search
            pairs = [(h.score, m) for h, m in zip(hits, members, strict=True) if m is not None]
            return [s for s, _ in pairs], [m for _, m in pairs]
        positions, scores = found
        return scores, st.rows.hits_at(positions)

    # -- searching --------------------------------------------------------------------------------
    def search(
        self, query: Query, k: int = 10, mode: str = "unsupervised", include_self: bool = False
    ) -> SearchResult:
        """Top-``k`` catalog images most similar to ``query`` (id, path, bytes, PIL image or
        a :class:`PreparedQuery`)."""
        return self.search_many([query], k, mode, include_self)[0]

    def search_many(
        self,
        queries: list[Query],
        k: int = 10,
        mode: str = "unsupervised",
        include_self: bool = False,
        errors: str = "raise",
    ) -> list[Any]:
        """Search many queries with one batched encoder call for all the photos among them.

        ``errors="raise"`` raises the first TiefjaxError; ``errors="return"`` puts the error in
        that query's place so one bad upload does not fail the others.
        """
        out = self.search_modes(queries, k, (mode,), include_self, errors)
        return [r if isinstance(r, TiefjaxError) else r[mode] for r in out]

    def prepare(self, query: Query) -> PreparedQuery:
        """Resolve and decode one query (thread-safe; run it in worker threads to overlap)."""
        if isinstance(query, PreparedQuery):
            return query
        st = self._state
        pos, photo = self._resolve(st, query)
        if pos is not None:
            return PreparedQuery(st.name, pos, None)
        if not isinstance(photo, bytes):
            img = photo if photo.mode == "RGB" else photo.convert("RGB")
            return PreparedQuery(st.name, None, img)
        name = str(query) if isinstance(query, str | os.PathLike) else "query image"
        img, scale = load_rgb_scaled(photo, self.decode_short_side, name=name)
        return PreparedQuery(st.name, None, img, scale, photo)

    @functools.cached_property
    def decode_short_side(self) -> int:
        """Query photos are decoded with at least this shorter side (JPEGs in draft mode): what
        the locator looks at, or the encoder's window when boxes are not located."""
        if not self.config.locate:
            return WINDOW
        from tiefjax.locate import LocateConfig

        return self.ws.section("locate", LocateConfig).decode_short_side

    def search_modes(
        self,
        queries: list[Query],
        k: int = 10,
        modes: tuple[str, ...] = ("unsupervised",),
        include_self: bool = False,
        errors: str = "raise",
    ) -> list[Any]:
        """Like :meth:`search_many` for several modes at once (photos are encoded once):
        one ``{mode: SearchResult}`` (or error) per query."""
        st = self._state
        mstates = {m: self._mode(st, m) for m in modes}
        k = self._check_k(k)
        results: list[Any] = [None] * len(queries)
        prepared: dict[int, PreparedQuery] = {}
        for i, q in enumerate(queries):
            try:
                p = self.prepare(q)
                if p.build != st.name and p.position is not None:  # prepared before a reload
                    if isinstance(q, PreparedQuery):
                        raise Conflict("the index was rebuilt while searching; search again")
                    p = self.prepare(q)
                prepared[i] = p
            except TiefjaxError as err:
                if errors == "raise":
                    raise
                results[i] = err
        photos = [(i, p) for i, p in prepared.items() if p.position is None]
        encoded = self._encode_photos(st, modes, photos) if photos else []
        vectors: dict[str, dict[int, np.ndarray]] = {m: {} for m in modes}
        rows: dict[int, tuple[int, Row]] = {}  # (catalog position or -1, row)
        for i, p in prepared.items():
            if p.position is not None:
                rows[i] = (p.position, st.rows.row(p.position))
                for m in modes:
                    vectors[m][i] = np.asarray(mstates[m].index.vectors[p.position], np.float32)
        for (i, _), (vecs, row) in zip(photos, encoded, strict=True):
            rows[i] = (-1, replace(row, box=scale_box(row.box, prepared[i].scale)))
            for m in modes:
                vectors[m][i] = vecs[m]
        order = sorted(rows)
        for i in order:
            results[i] = {}
        # an upload's copy check looks at its first copy_check_hits hits, whatever k is
        wanted = max(k, self.config.copy_check_hits) if self.config.copy_check and photos else k
        for m in modes:
            if not order:
                break
            q = np.stack([vectors[m][i] for i in order])
            ids, scores = mstates[m].index.search(q, min(wanted + 1, len(st.rows)))
            for j, i in enumerate(order):
                own_pos, row = rows[i]
                hits = [
                    Hit(st.rows.id(int(p)), float(s), int(p), st.name)
                    for p, s in zip(ids[j], scores[j], strict=True)
                    if p >= 0 and (include_self or int(p) != own_pos)
                ][: k if own_pos >= 0 else wanted]
                results[i][m] = SearchResult(
                    box=float_box(row.box),
                    probability=row.probability,
                    fallback=row.fallback,
                    hits=hits,
                    mode=m,
                    query_id=row.id if own_pos >= 0 else None,
                    box_source=row.source,
                )
        if self.config.copy_check:
            for i, p in photos:
                results[i] = self._copies_first(results[i], p, k)
        return results

    def _copies_first(
        self, found: dict[str, SearchResult], query: PreparedQuery, k: int
    ) -> dict[str, SearchResult]:
        """An uploaded photo's first ``copy_check_hits`` hits aligned with it
        (:mod:`tiefjax.copy_check`): those scoring at least ``copy_threshold`` go first, best
        first, and the best is ``copy_of``; then the list is cut to ``k``. The check only
        re-orders: if it fails, the descriptor's order stands (and the failure is logged)."""
        n = self.config.copy_check_hits
        ids = list(dict.fromkeys(h.id for res in found.values() for h in res.hits[:n]))
        try:
            pixel_size = (query.scale[0] + query.scale[1]) / 2
            aligned = copy_scores(query.image, pixel_size, self._catalog_photos(ids))
        except Exception:  # noqa: BLE001 - a best-effort re-ordering never fails a search
            _log.exception("the copy check failed; the hits keep the descriptor's order")
            aligned = [None] * len(ids)
        scores = {i: s for i, s in zip(ids, aligned, strict=True) if s is not None}
        out = {}
        for mode, res in found.items():
            copies = [
                h
                for h in res.hits[:n]
                if h.id in scores and scores[h.id] >= self.config.copy_threshold
            ]
            copies.sort(key=lambda h: -scores[h.id])
            best = copies[0].id if copies else None
            first = copies or self._clear_winner(res.hits[:n], scores)
            hits = (first + [h for h in res.hits if h not in first])[:k]
            score = scores[best] if best else None
            out[mode] = replace(res, hits=hits, copy_of=best, copy_score=score)
        return out

    def _clear_winner(self, hits: list[Hit], scores: dict[str, float]) -> list[Hit]:
        """The hit that aligns far better than every other (``copy_floor``, by
        ``copy_margin``) though below the threshold: first, but not called a copy (a turned
        copy often aligns at 0.8 while its siblings stay near 0.6)."""
        ranked = sorted((h for h in hits if h.id in scores), key=lambda h: -scores[h.id])
        if not ranked or scores[ranked[0].id] < self.config.copy_floor:
            return []
        second = scores[ranked[1].id] if len(ranked) > 1 else -1.0
        return ranked[:1] if scores[ranked[0].id] - second >= self.config.copy_margin else []

    def _catalog_photos(self, ids: list[str]) -> list[CatalogPhoto | None]:
        """The copy check's views of catalog photos; None for one whose file is missing,
        unreadable or a link out of the images folder (all None if the store cannot be read)."""
        from tiefjax.store import Store

        def record(store: Store, image_id: str) -> Any:
            try:
                return store.get_image(image_id)
            except NotFound:  # removed from the catalog since the build
                return None

        try:
            with Store(self.ws.store_path) as store:
                records = [record(store, i) for i in ids]
        except (TiefjaxError, OSError, sqlite3.Error) as err:
            _log.warning("the copy check cannot read the catalog (%s); skipped", err)
            return [None] * len(ids)
        return [
            None if r is None else _catalog_photo(r.path, max(r.width, r.height)) for r in records
        ]

    def neighbours(self, image_id: str, k: int = 10, mode: str = "unsupervised") -> list[Hit]:
        """Precomputed most-similar catalog images of ``image_id`` (itself excluded)."""
        st = self._state
        found = self._neighbour_rows(st, image_id, k, mode)
        if found is None:
            return self.search(image_id, k, mode).hits
        positions, scores = found
        return [
            Hit(i, s, p, st.name)
            for i, s, p in zip(st.rows.ids_at(positions), scores, positions.tolist(), strict=True)
        ]

    def _neighbour_rows(
        self, st: _State, image_id: str, k: int, mode: str
    ) -> tuple[np.ndarray, list[float]] | None:
        """Rows and scores of ``image_id``'s precomputed neighbours; None when ``k`` is more
        than the lists hold and the catalog has more (a search is needed)."""
        ms = self._mode(st, mode)
        k = self._check_k(k)
        pos = self._position(st, image_id)
        if k > ms.neighbours.shape[1] and ms.neighbours.shape[1] < len(st.rows) - 1:
            return None
        row = ms.neighbours[pos][:k]
        positions, scores = row["id"], row["score"]
        if len(positions) and positions[-1] < 0:  # -1 pads lists shorter than k (tiny catalogs)
            keep = positions >= 0
            positions, scores = positions[keep], scores[keep]
        return positions, scores.tolist()

    def neighbour_table(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """Every catalog image's precomputed neighbours in ``mode``, best first: row positions
        in :attr:`ids` ``(N, K)`` (-1 = none) and their scores (the review queue reads them)."""
        ms = self._mode(self._state, mode)
        return np.asarray(ms.neighbours["id"]), np.asarray(ms.neighbours["score"])

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _check_k(k: int) -> int:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise InvalidInput(f"k must be a positive whole number, got {k!r}")
        return int(k)

    def _mode(self, st: _State, mode: str) -> _ModeState:
        if mode not in MODES:
            raise InvalidInput(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if mode not in st.modes:
            if mode == "supervised" and load_ranking(self.ws) is not None:
                raise NotFound(
                    "the ranking net was trained after the index was built; "
                    f"run `tiefjax index {self.ws.root}` to add the supervised index"
                )
            raise NotFound(SUPERVISED_MISSING.format(ws=self.ws.root))
        return st.modes[mode]

    def _position(self, st: _State, image_id: str) -> int:
        pos = st.rows.position(image_id)
        if pos is None:
            raise NotFound(
                f"no image with id {image_id!r} in the index (built {st.meta.get('built_at')}); "
                f"if it was added since, run `tiefjax index {self.ws.root}`"
            )
        return pos

    def _resolve(self, st: _State, q: Query) -> tuple[int | None, Any]:
        """(catalog position, None) for catalog images, else (None, bytes | PIL image)."""
        from PIL import Image

        if isinstance(q, Image.Image):
            source = getattr(q, "filename", "")  # set by Image.open, lost by any transform
            if source and os.path.isfile(source):
                pos = st.rows.by_sha(hashlib.sha256(Path(source).read_bytes()).hexdigest())
                if pos is not None:
                    return pos, None
            return None, q
        if isinstance(q, bytes | bytearray | memoryview):
            data = bytes(q)
        elif isinstance(q, str | os.PathLike):
            path = Path(q).expanduser()
            pos = st.rows.position(q)
            if pos is not None and not path.is_file():
                return pos, None
            if not path.is_file():
                if isinstance(q, str) and not path.suffix and os.sep not in q:
                    self._position(st, q)  # raises NotFound naming the unknown id
                raise InvalidInput(f"{q}: no such image file (and not a catalog image id)")
            try:
                data = path.read_bytes()
            except OSError as err:
                raise InvalidInput(f"{q}: cannot read the file ({err.strerror})") from err
        else:
            raise InvalidInput(
                f"a query must be an image id, a file path, image bytes or a PIL image, "
                f"not {type(q).__name__}"
            )
        if not data:
            raise InvalidInput("the query image is empty (0 bytes)")
        pos = st.rows.by_sha(hashlib.sha256(data).hexdigest())
        return (pos, None) if pos is not None else (None, data)

    def _get_encoder(self) -> FeatureEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = load_feature_encoder(self.ws, self.config.batch_size)
            return self._encoder

    def _get_locator(self, st: _State) -> Any:
        with self._lock:
            fp = st.meta.get("locator")
            if self._locator_fp != fp:
                loc = load_locator(self.ws, self.config.locate)
                self._locator = loc[0] if loc else None
                self._locator_fp = fp
            return self._locator

    def _ranking_fn(self, st: _State) -> tuple[Any, FeatureEncoder | None]:
        with self._lock:
            if self._ranking is None or self._ranking[0] != st.name:
                trained = load_ranking(self.ws)
                if trained is None:
                    raise NotFound(SUPERVISED_MISSING.format(ws=self.ws.root))
                enc = None
                if getattr(trained, "encoder_params", None) is not None:
                    enc = FeatureEncoder(
                        trained.encoder_params, "ranking", self.config.batch_size, "ranking"
                    )
                self._ranking = (st.name, (make_ranking_fn(trained), enc))
            return self._ranking[1]

    def _stale_reason(self, st: _State) -> str | None:
        current = self._encoder.fingerprint if self._encoder else encoder_fingerprint(self.ws)
        if st.meta.get("encoder") != current:
            return (
                "the encoder weights changed after this index was built; "
                f"run `tiefjax index {self.ws.root}`"
            )
        return None

    def _encode_photos(
        self, st: _State, modes: tuple[str, ...], photos: list[tuple[int, PreparedQuery]]
    ) -> list[tuple[dict[str, np.ndarray], Row]]:
        """Locate, crop and encode decoded photos in one batch: ({mode: vector}, row) each,
        boxes in the decoded images' pixels."""
        images = [p.image for _, p in photos]
        stale = self._stale_reason(st)
        if stale and not self._warned_stale:
            self._warned_stale = True
            print(f"tiefjax: warning: {stale}", file=sys.stderr)
        locator = self._get_locator(st)
        rows: list[Row] = []
        if locator is not None:
            located = locator.locate_many(images)
            for found in located:
                box = float_box(found.box)
                rows.append(
                    Row("", "", box, "detection", float(found.probability), bool(found.fallback))
                )
        else:
            for img in images:
                box = whole_box(img, self.config.trim_borders)
                rows.append(Row("", "", box, "whole", None, True))
        windows = np.stack(
            [
                window_of(p.image, r.box, WINDOW, p.scale, p.source)
                for (_, p), r in zip(photos, rows, strict=True)
            ]
        )
        vecs: dict[str, np.ndarray] = {}
        feats = None
        for mode in modes:
            ms = st.modes[mode]
            if mode == "supervised":
                ranking, ranking_encoder = self._ranking_fn(st)
                if ranking_encoder is not None:
                    desc = ranking(ranking_encoder(windows))
                else:
                    feats = self._get_encoder()(windows) if feats is None else feats
                    desc = ranking(feats)
            else:
                feats = self._get_encoder()(windows) if feats is None else feats
                desc = feats / np.float32(PATCH)
            vecs[mode] = l2_normalize(ms.projection.apply(desc))
        return [({m: vecs[m][j] for m in modes}, rows[j]) for j in range(len(images))]


def _catalog_photo(path: str, long_side: int) -> CatalogPhoto | None:
    """The copy check's views of one catalog file, cached while the file keeps its size and
    modification time; None (not cached: it may come back) when it cannot be read."""
    file = Path(path)
    try:
        if link_outside(file) is not None:
            return None
        stat = file.stat()
        return _load_catalog_photo(path, long_side, stat.st_mtime_ns, stat.st_size)
    except (TiefjaxError, OSError):
        return None


@functools.lru_cache(maxsize=512)  # about 60 KB each
def _load_catalog_photo(path: str, long_side: int, mtime_ns: int, size: int) -> CatalogPhoto:
    side = 2 * FINE_SIDE
    return catalog_photo(load_rgb(Path(path), target_size=(side, side)), long_side)


def image_bytes(img: Any) -> bytes:
    """PNG bytes of a PIL image (handy for tests and callers holding decoded images)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
