"""Maximum-inner-product search over L2-normalised vectors: exact NumPy or ScaNN.

The configuration is chosen from the catalog size N (see :func:`choose_params`): exact NumPy
below a threshold, ScaNN brute force for small catalogs, asymmetric hashing (AH) + exact
re-ranking for medium ones and a partition tree with about sqrt(N) leaves + AH + re-ranking for
large ones. An index is a folder: ``vectors.npy`` (the database, row = catalog position),
``index.json`` (its parameters and measured recall) and ``scann/`` (ScaNN's own files).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tiefjax.index.config import IndexConfig

KINDS = ("exact", "brute_force", "ah", "tree")


@dataclass(frozen=True)
class IndexParams:
    """What kind of index to build and how it searches."""

    kind: str = "exact"
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    training_sample: int = 100000

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind {self.kind!r} is not one of {', '.join(KINDS)}")


def choose_params(n: int, config: IndexConfig | None = None) -> IndexParams:
    """Index parameters for ``n`` vectors: config overrides win, the rest is sized from n."""
    cfg = config or IndexConfig()
    kind = cfg.kind
    if kind == "auto":
        if n < cfg.exact_below:
            kind = "exact"
        elif n < cfg.brute_force_below:
            kind = "brute_force"
        elif n < cfg.tree_from:
            kind = "ah"
        else:
            kind = "tree"
    leaves = cfg.num_leaves or max(2, int(round(math.sqrt(n))))
    leaves = min(leaves, max(2, n // 2))
    to_search = cfg.leaves_to_search or max(10, math.ceil(leaves * 0.1))
    reorder = cfg.reorder or (100 if kind == "tree" else 200)
    return IndexParams(
        kind=kind,
        num_leaves=leaves if kind == "tree" else 0,
        leaves_to_search=min(to_search, leaves) if kind == "tree" else 0,
        reorder=reorder if kind in ("ah", "tree") else 0,
        dims_per_block=cfg.dims_per_block,
        anisotropic_threshold=cfg.anisotropic_threshold,
        training_sample=min(cfg.training_sample, n),
    )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def exact_search(
    database: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by dot product: (positions int64 (Q,k), scores float32 (Q,k)).

    The database may be a memory map; it is read in chunks so memory stays bounded.
    """
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    n = database.shape[0]
    k = min(k, n)
    best_ids = np.zeros((queries.shape[0], 0), np.int64)
    best_scores = np.zeros((queries.shape[0], 0), np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(database[start : start + chunk], np.float32)
        scores = queries @ block.T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_ids = np.concatenate([best_ids, part + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
        if best_ids.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_ids = np.take_along_axis(best_ids, keep, 1)
            best_scores = np.take_along_axis(best_scores, keep, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1), np.take_along_axis(best_scores, order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the true top-k positions that were found in the first k."""
    k = min(k, truth.shape[1])
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits) / (k * len(truth))) if len(truth) else 1.0


def _without(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids minus the query's own position, first ``k`` kept (-1 padded)."""
    out = np.full((len(rows), k), -1, np.int64)
    for i, (row, r) in enumerate(zip(ids, rows, strict=True)):
        kept = row[row != r][:k]
        out[i, : len(kept)] = kept
    return out


class VectorIndex:
    """A built (or loaded) index over unit vectors; ``search`` is thread-safe."""

    def __init__(self, vectors: np.ndarray, params: IndexParams, searcher=None, info=None):
        self.vectors = vectors
        self.params = params
        self._searcher = searcher
        self.info: dict = dict(info or {})
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    # -- build ------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, vectors: np.ndarray, params: IndexParams | None = None, threads: int = 0
    ) -> VectorIndex:
        """Index ``vectors`` (rows L2-normalised by the caller); ``params`` default from N."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        n = vectors.shape[0]
        params = params or choose_params(n)
        if n == 0:
            params = replace(params, kind="exact")
        t0 = time.perf_counter()
        searcher = None if params.kind == "exact" else _build_scann(vectors, params, threads)
        info = {"build_seconds": round(time.perf_counter() - t0, 3)}
        return cls(vectors, params, searcher, info)

    # -- search -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database positions and dot-product scores for each query row."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        k = min(int(k), self.size)
        if k <= 0 or queries.shape[0] == 0:
            z = np.zeros((queries.shape[0], 0))
            return z.astype(np.int64), z.astype(np.float32)
        if self._searcher is None:
            return exact_search(self.vectors, queries, k)
        pre = max(self.params.reorder, k) if self.params.reorder else None
        kwargs = {"final_num_neighbors": k}
        if pre:
            kwargs["pre_reorder_num_neighbors"] = pre
        if self.params.kind == "tree":
            kwargs["leaves_to_search"] = self.params.leaves_to_search
        if queries.shape[0] == 1:
            ids, scores = self._searcher.search(queries[0], **kwargs)
            ids, scores = ids[None], scores[None]
        elif queries.shape[0] >= 64:
            ids, scores = self._searcher.search_batched_parallel(queries, **kwargs)
        else:
            ids, scores = self._searcher.search_batched(queries, **kwargs)
        ids = np.asarray(ids, np.int64)
        scores = np.asarray(scores, np.float32)
        if ids.shape[1] < k:  # ScaNN returns fewer when a probed region is small: pad
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, scores

    def measure_recall(self, sample: int = 200, k: int = 10, seed: int = 0) -> float:
        """recall@k of this index against exact search, catalog rows as queries (each query's
        own row left out of both answers, so finding itself does not flatter the figure)."""
        if self.size <= 1:
            return 1.0
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(self.size, size=min(sample, self.size), replace=False))
        queries = np.asarray(self.vectors[rows], np.float32)
        kk = min(k, self.size - 1)
        truth, _ = exact_search(self.vectors, queries, kk + 1)
        found, _ = self.search(queries, kk + 1)
        return recall_at_k(_without(found, rows, kk), _without(truth, rows, kk), kk)

    def autotune(
        self, target: float = 0.95, sample: int = 200, margin: float = 0.01, steps: int = 8
    ) -> float:
        """Cheapest search settings (leaves searched, candidates re-ranked) reaching ``target``
        recall@10 (+ ``margin``) on a sample; search-time only, nothing is rebuilt.

        Starts cheap and doubles until the measured recall is high enough; returns it.
        """
        if self.params.kind not in ("ah", "tree"):
            return self.measure_recall(sample)
        p = self.params
        ls = max(2, math.ceil(p.num_leaves * 0.005)) if p.kind == "tree" else 0
        ro = 40
        best = None
        for _ in range(steps):
            self.params = replace(p, leaves_to_search=min(ls, p.num_leaves), reorder=ro)
            recall = self.measure_recall(sample)
            best = (recall, self.params) if best is None or recall > best[0] else best
            if recall >= target + margin:
                return recall
            if p.kind == "tree" and ls < p.num_leaves:
                ls *= 2
            ro = min(ro * 2, max(40, self.size))
        self.params = best[1]
        return best[0]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``vectors.npy``, ``index.json`` and (ScaNN kinds) ``scann/`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        if self._searcher is not None:
            (folder / "scann").mkdir(exist_ok=True)
            self._searcher.serialize(str(folder / "scann"))
        meta = {"params": asdict(self.params), "size": self.size, "dim": self.dim, **self.info}
        (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike[str], mmap: bool = True) -> VectorIndex:
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        params = IndexParams(**meta.pop("params"))
        vectors = np.load(folder / "vectors.npy", mmap_mode="r" if mmap else None)
        searcher = None
        if params.kind != "exact":
            searcher = _load_scann(folder / "scann")
        return cls(vectors, params, searcher, meta)


_ASSET_PATH = re.compile(r'asset_path: "([^"]*)"')


def _load_scann(folder: Path):
    """Load a serialised ScaNN searcher from wherever its folder is now.

    ScaNN writes absolute asset paths into ``scann_assets.pbtxt``; builds are written to a
    temporary folder and renamed into place, so the paths are re-pointed at ``folder`` here
    (in memory: the files on disk are never changed by a reader).
    """
    import scann  # noqa: F401 - registers scann_pybind
    import scann_pybind
    from scann.scann_ops.py.scann_ops_pybind import ScannSearcher

    text = (folder / "scann_assets.pbtxt").read_text()
    text = _ASSET_PATH.sub(lambda m: f'asset_path: "{folder / Path(m.group(1)).name}"', text)
    return ScannSearcher(scann_pybind.ScannNumpy(str(folder), text), None)


def _build_scann(vectors: np.ndarray, params: IndexParams, threads: int = 0):
    import scann

    n, dim = vectors.shape
    k = min(10, n)
    builder = scann.scann_ops_pybind.builder(vectors, k, "dot_product")
    if threads:
        builder = builder.set_n_training_threads(threads)
    if params.kind == "brute_force":
        return builder.score_brute_force().build()
    if params.kind == "tree":
        builder = builder.tree(
            num_leaves=params.num_leaves,
            num_leaves_to_search=params.leaves_to_search,
            training_sample_size=params.training_sample,
            spherical=True,
        )
    dpb = max(1, min(params.dims_per_block, dim))
    builder = builder.score_ah(
        dpb,
        anisotropic_quantization_threshold=params.anisotropic_threshold,
        training_sample_size=params.training_sample,
    )
    return builder.reorder(max(params.reorder, k)).build()
