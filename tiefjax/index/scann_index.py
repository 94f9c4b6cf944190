"""Maximum-inner-product search over L2-normalised vectors: exact NumPy or ScaNN.

The configuration is chosen from the catalog size N (see :func:`choose_params`): exact NumPy
below a threshold, ScaNN brute force for small catalogs, asymmetric hashing (AH) + exact
re-ranking for medium ones and a partition tree with about sqrt(N) leaves + AH + re-ranking for
large ones. An index is a folder: ``vectors.npy`` (the database, row = catalog position),
``index.json`` (its parameters and measured recall) and ``scann/`` (ScaNN's own files).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tiefjax.index.config import IndexConfig

KINDS = ("exact", "brute_force", "ah", "tree")
_F32 = np.dtype(np.float32)


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
    reorder = cfg.reorder or 200  # AH codes without residuals (see _build_scann_quietly)
    return IndexParams(
        kind=kind,
        num_leaves=leaves if kind == "tree" else 0,
        leaves_to_search=min(to_search, leaves) if kind == "tree" else 0,
        reorder=reorder if kind in ("ah", "tree") else 0,
        dims_per_block=cfg.dims_per_block,
        anisotropic_threshold=cfg.anisotropic_threshold,
        training_sample=min(cfg.training_sample, n),
    )


def _reorder_ladder(n: int) -> list[int]:
    """Re-ranked candidate counts tried by :meth:`VectorIndex.autotune`: 20, 30, 40, 60, 80,
    120, ... (each pair doubling), the last one ``n``."""
    out, a, b = [], 20, 30
    while a < n:
        out.append(a)
        a, b = b, 2 * a
    return [*out, n]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


#: bytes of one block of exact search: database rows as float32 plus what scoring them makes
EXACT_BLOCK_BYTES = 256 * 2**20


def block_rows(dim: int, queries: int, budget: int = EXACT_BLOCK_BYTES) -> int:
    """Database rows per block of :func:`exact_search` so that the block (float32, ``dim``
    wide) and what scoring it against ``queries`` makes (the float32 scores, their negation
    and argpartition's int64 positions: 16 bytes a score) stay within ``budget`` bytes: about
    2,000 rows at the full 30,976 dimensions, not a fixed count whose size grows with the
    dimension."""
    return max(1, budget // (4 * dim + 16 * max(1, queries)))


def read_blocks(x: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float32 block)`` over ``x``, ``rows`` rows at a time. When ``x`` is memory-
    mapped, each block's pages are handed back to the kernel once the caller asks for the next
    one (they stay in the page cache): read through, a memory map would otherwise stay resident
    in this process as a whole (a million 256-d rows: 1 GB more peak memory)."""
    for start in range(0, x.shape[0], rows):
        view = x[start : start + rows]
        yield start, np.asarray(view, np.float32)
        _release_pages(view)


def _release_pages(view: np.ndarray) -> None:
    """madvise(DONTNEED) the pages under ``view`` when it lies in a read-only memory map (a
    no-op for arrays in memory): clean file pages, so nothing is lost; the next read faults
    them in again from the page cache."""
    mapped = getattr(view, "_mmap", None)
    if mapped is None or view.nbytes == 0 or getattr(view, "mode", "r") != "r":
        return
    base = np.frombuffer(mapped, np.uint8).ctypes.data
    start = (view.ctypes.data - base) // mmap.PAGESIZE * mmap.PAGESIZE
    mapped.madvise(mmap.MADV_DONTNEED, start, view.ctypes.data - base + view.nbytes - start)


def exact_search(
    database: np.ndarray, queries: np.ndarray, k: int, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by dot product: (positions int64 (Q,k), scores float32 (Q,k)).

    The database may be a memory map; it is read in blocks of ``chunk`` rows (default
    :func:`block_rows`), so memory stays bounded whatever its size and dimension.
    """
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    n = database.shape[0]
    k = min(k, n)
    chunk = chunk or block_rows(int(database.shape[1]), queries.shape[0])
    best_ids = np.zeros((queries.shape[0], 0), np.int64)
    best_scores = np.zeros((queries.shape[0], 0), np.float32)
    for start, block in read_blocks(database, chunk):
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


def exact_neighbours(database: np.ndarray, rows: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-``k`` positions (int64, -1 padded) of the database ``rows`` as queries, each
    query's own row left out: the ground truth recall is measured against."""
    queries = np.asarray(database[rows], np.float32)
    ids, _ = exact_search(database, queries, k + 1)
    return _without(ids, rows, k)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the true top-k positions that were found in the first k."""
    k = min(k, truth.shape[1])
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits) / (k * len(truth))) if len(truth) else 1.0


def sample_rows(n: int, sample: int, seed: int = 0) -> np.ndarray:
    """``min(sample, n)`` distinct catalog rows out of ``n``, drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(sample, n), replace=False))


@dataclass(frozen=True)
class QuerySplit:
    """Two disjoint samples of catalog rows: ``tune`` chooses settings (reduction width, search
    settings), ``report`` measures the recall a build reports, so the figure reported is not
    the one the settings were chosen to reach."""

    tune: np.ndarray
    report: np.ndarray


def split_queries(n: int, sample: int, seed: int = 0) -> QuerySplit:
    """``sample`` rows to tune on and ``sample`` other rows to report on, out of ``n`` catalog
    rows (half each, one left over when n is odd, for catalogs under ``2 * sample``)."""
    each = min(sample, n // 2)
    picked = sample_rows(n, 2 * each, seed)
    order = np.random.default_rng(seed + 1).permutation(len(picked))
    return QuerySplit(np.sort(picked[order[:each]]), np.sort(picked[order[each:]]))


def _padded(ids, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """ScaNN's (Q, <=k) answers as int64 / float32 (Q, k): it returns fewer when a probed
    region is small, so the rest is padded with -1 / -inf."""
    ids = np.asarray(ids, np.int64)
    scores = np.asarray(scores, np.float32)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids, scores


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
        # the pybind object under ScaNN's Python wrapper: the single-query path calls it directly
        self._raw = getattr(searcher, "searcher", None)
        self.info: dict = dict(info or {})

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
        raw = self._raw
        if (
            raw is not None
            and type(queries) is np.ndarray
            and queries.dtype is _F32
            and (queries.ndim == 1 or (queries.ndim == 2 and queries.shape[0] == 1))
            and type(k) is int
            and 0 < k <= self.vectors.shape[0]
        ):  # one query: the latency path, one call into ScaNN and one conversion
            p = self.params
            ids, scores = raw.search(
                queries if queries.ndim == 1 else queries[0],
                k,
                (p.reorder if p.reorder > k else k) if p.reorder else -1,
                p.leaves_to_search if p.kind == "tree" else -1,
            )
            if ids.shape[0] == k:
                return ids.astype(np.int64)[None], scores[None]
            return _padded(ids[None], scores[None], k)
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
        return _padded(ids, scores, k)

    def measure_recall(
        self, sample: int = 200, k: int = 10, seed: int = 0, rows: np.ndarray | None = None
    ) -> float:
        """recall@k of this index against exact search, catalog rows as queries (each query's
        own row left out of both answers, so finding itself does not flatter the figure): the
        ``rows`` given, else a seeded ``sample`` of them."""
        return self._recall_probe(self._rows(sample, seed, rows), k)[0]()

    def _rows(self, sample: int, seed: int, rows: np.ndarray | None) -> np.ndarray:
        """``rows`` when given, else ``sample`` catalog rows drawn with ``seed``."""
        if rows is not None:
            return np.asarray(rows, np.int64)
        return sample_rows(self.size, sample, seed)

    def _recall_probe(
        self, rows: np.ndarray, k: int = 10
    ) -> tuple[Callable[[], float], np.ndarray]:
        """(a function giving :meth:`measure_recall` for the current params, the queries): the
        queries (catalog ``rows``) and their exact answers are computed once."""
        queries = np.asarray(self.vectors[rows], np.float32)
        if self.size <= 1 or len(rows) == 0:
            return (lambda: 1.0), queries
        kk = min(k, self.size - 1)
        truth = exact_neighbours(self.vectors, rows, kk)

        def probe() -> float:
            found, _ = self.search(queries, kk + 1)
            return recall_at_k(_without(found, rows, kk), truth, kk)

        return probe, queries

    def autotune(
        self,
        target: float = 0.95,
        sample: int = 200,
        margin: float = 0.01,
        steps: int = 12,
        slack: float = 0.1,
        rows: np.ndarray | None = None,
    ) -> float:
        """Fastest search settings (leaves searched, candidates re-ranked) whose recall@10 on
        the catalog ``rows`` given (else a seeded ``sample``) reaches ``target`` (+ ``margin``);
        search-time only, nothing is rebuilt. A build tunes on rows it does not report recall
        on (:func:`split_queries`), so the figure it reports was not what was tuned for.

        For 1, 2, 4, ... leaves searched (tree; at most ``steps`` counts) the fewest re-ranked
        candidates on the ladder 20, 30, 40, 60, 80, 120, ... that reach the recall are found,
        the recall measured as in :meth:`measure_recall`; a ladder stops early once re-ranking
        more no longer helps (the leaves searched miss the rest). Leaves stop doubling two steps
        after the first settings that reach the recall, or once they need the fewest candidates.
        The settings that reach it are timed one query at a time on the sample (the latency
        that matters to a server) and the fastest is kept; if none reaches it, the ones with the
        best recall. Then extra recall is bought where it is nearly free: re-ranking grows by
        steps of 25% while each step at least halves the sample's misses and the query stays
        within ``slack`` (10%) of the fastest settings' time (re-scoring a few more candidates
        exactly is cheap next to ScaNN's fixed cost per query; 0 turns this off). Returns the
        recall of the settings kept.
        """
        tune_rows = self._rows(sample, 0, rows)
        if self.params.kind not in ("ah", "tree"):
            return self.measure_recall(rows=tune_rows)
        p = self.params
        goal = target + margin
        probe, queries = self._recall_probe(tune_rows)
        ladder = _reorder_ladder(self.size)
        if p.kind == "tree":
            leaves = [min(2**i, p.num_leaves) for i in range(steps)]
            leaves = sorted(set(leaves))
        else:
            leaves = [0]
        reached: list[tuple[IndexParams, float]] = []
        best = (-1.0, p)
        first_reached = -1
        for i, ls in enumerate(leaves):
            previous = -1.0
            for ro in ladder:
                self.params = replace(p, leaves_to_search=ls, reorder=ro)
                recall = probe()
                if recall > best[0]:
                    best = (recall, self.params)
                if recall >= goal:
                    reached.append((self.params, recall))
                    break
                if recall - previous < 0.001:  # limited by the leaves searched, not re-ranking
                    break
                previous = recall
            if reached and first_reached < 0:
                first_reached = i
            if reached and (i - first_reached >= 2 or reached[-1][0].reorder == ladder[0]):
                break
        if not reached:
            self.params = best[1]
            return best[0]
        if len(reached) > 1:
            times = self._time_single([c for c, _ in reached], queries)
            chosen, recall = reached[int(np.argmin(times))]
        else:
            chosen, recall = reached[0]
        fastest = chosen
        while slack > 0 and recall < 1.0 and chosen.reorder < self.size:
            ro = min(self.size, chosen.reorder + max(1, chosen.reorder // 4))
            self.params = candidate = replace(chosen, reorder=ro)
            more = probe()
            if 1.0 - more > 0.5 * (1.0 - recall):
                break
            base, t = self._time_single([fastest, candidate], queries, rounds=5)
            if t > (1.0 + slack) * base:
                break
            chosen, recall = candidate, more
        self.params = chosen
        return recall

    def _time_single(self, candidates: list[IndexParams], queries: np.ndarray, rounds: int = 3):
        """Seconds per query of each candidate, one query at a time, best of ``rounds`` with the
        candidates taking turns (load from other processes hits them alike)."""
        keep = self.params
        best = [math.inf] * len(candidates)
        try:
            for _ in range(rounds):
                for i, cand in enumerate(candidates):
                    self.params = cand
                    t0 = time.perf_counter()
                    for q in queries:
                        self.search(q, 10)
                    best[i] = min(best[i], (time.perf_counter() - t0) / max(1, len(queries)))
        finally:
            self.params = keep
        return best

    # -- persistence ------------------------------------------------------------------------------
    def save_vectors(self, folder: str | os.PathLike[str]) -> None:
        """Write ``vectors.npy``; from then on the index reads its vectors memory-mapped from
        it, as a loaded index does. A build calls this as soon as ScaNN has its own copy: the
        one in memory is freed before tuning and serialising (a million 256-d rows: 1 GB)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``vectors.npy`` (unless :meth:`save_vectors` wrote it there), ``index.json``
        and (ScaNN kinds) ``scann/`` into ``folder``."""
        folder = Path(folder)
        saved = getattr(self.vectors, "filename", None)  # a memory map's file
        if saved is None or Path(saved).resolve() != (folder / "vectors.npy").resolve():
            self.save_vectors(folder)
        if self._searcher is not None:
            (folder / "scann").mkdir(exist_ok=True)
            # asset paths relative to scann/: the folder can be renamed or moved as it is
            self._searcher.serialize(str(folder / "scann"), relative_path=True)
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

# x86 kernels of the scann wheel and the CPU flags (as Linux names them) each one needs
_SIMD_LEVELS = (
    ("avx2", ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "popcnt")),
    ("avx512", ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd")),
)
_simd_lock = threading.Lock()
_simd_done: list[str] | None = None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def enable_scann_simd() -> list[str]:
    """Let ScaNN use the AVX2 / AVX-512 kernels this CPU has; returns the levels enabled.

    The scann wheel (1.4.2) is built without its x86 CPU detection (``port::TestCPUFeature``
    always answers false), so every search and build runs its SSE4 kernels although the AVX2
    and AVX-512 ones are compiled in and picked at each call from two exported flags
    (``flags_internal::should_use_avx2`` / ``should_use_avx512``). They are set here from the
    CPU flags Linux reports, before any searcher is built or loaded: the same neighbours come
    back (scores may differ in the last bit), 5-15% sooner for one query. ``TIEFJAX_SCANN_SIMD=0``
    leaves ScaNN as it is. Idempotent and thread-safe.
    """
    global _simd_done
    with _simd_lock:
        if _simd_done is not None:
            return _simd_done
        _simd_done = []
        if os.environ.get("TIEFJAX_SCANN_SIMD", "1") == "0" or platform.machine() not in (
            "x86_64",
            "AMD64",
        ):
            return _simd_done
        import ctypes

        import scann  # noqa: F401 - puts scann_pybind on the path
        import scann_pybind

        try:
            lib = ctypes.CDLL(scann_pybind.__file__, mode=os.RTLD_NOLOAD)
        except (OSError, AttributeError):
            return _simd_done
        cpu = _cpu_flags()
        for level, needs in _SIMD_LEVELS:
            if not cpu.issuperset(needs):
                break
            name = f"should_use_{level}"
            try:  # mangled research_scann::flags_internal::should_use_<level>
                flag = ctypes.c_bool.in_dll(
                    lib, f"_ZN14research_scann14flags_internal{len(name)}{name}E"
                )
            except ValueError:
                break
            flag.value = True
            _simd_done.append(level)
        return _simd_done


def _scann():
    """``scann`` with its SIMD kernels enabled (see :func:`enable_scann_simd`)."""
    import scann

    enable_scann_simd()
    return scann


def _load_scann(folder: Path):
    """Load a serialised ScaNN searcher from wherever its folder is now.

    Builds are saved with asset paths relative to their folder, which ScaNN resolves against
    the folder it loads from. Builds saved before that hold absolute paths into the temporary
    folder they were written in (then renamed into place): those are re-pointed at ``folder``
    here, in memory (the files on disk are never changed by a reader).
    """
    _scann()  # registers scann_pybind
    import scann_pybind
    from scann.scann_ops.py.scann_ops_pybind import ScannSearcher

    def local(m: re.Match) -> str:
        path = m.group(1)
        if not os.path.isabs(path):
            return m.group(0)
        return f'asset_path: "{folder / Path(path).name}"'

    text = _ASSET_PATH.sub(local, (folder / "scann_assets.pbtxt").read_text())
    return ScannSearcher(scann_pybind.ScannNumpy(str(folder), text), None)


#: ScaNN's C++ progress chatter on fd 2: absl INFO lines and absl's one-time preamble.
_NATIVE_INFO = re.compile(
    r"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\))"
)


#: fd 2 is process-wide: overlapping redirections from two threads would restore the wrong one.
_FD2_LOCK = threading.Lock()


@contextlib.contextmanager
def native_info_held_back() -> Iterator[None]:
    """Hold back ScaNN's C++ INFO lines ("Single-machine AH training with dataset size = ...")
    written straight to fd 2 while this runs; pass on everything else written there meanwhile
    (warnings, errors, other output) once it ends. One thread at a time."""
    with _FD2_LOCK, _fd2_held_back():
        yield


@contextlib.contextmanager
def _fd2_held_back() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                text = held.read().decode(errors="replace")
                kept = [ln for ln in text.splitlines(keepends=True) if not _NATIVE_INFO.match(ln)]
                if kept:
                    sys.stderr.write("".join(kept))
                    sys.stderr.flush()
    finally:
        os.close(saved)


def _build_scann(vectors: np.ndarray, params: IndexParams, threads: int = 0):
    with native_info_held_back():
        return _build_scann_quietly(vectors, params, threads)


def _build_scann_quietly(vectors: np.ndarray, params: IndexParams, threads: int):
    scann = _scann()
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
    # No residual codes (ScaNN's default for a dot-product tree): computing them holds one more
    # float32 copy of the whole catalog during the build, its largest transient (a million
    # 256-d rows: peak RSS 3.60 -> 2.79 GiB). The codes are coarser, so twice the candidates
    # are re-ranked by default (200, as for "ah"): 6,000 x 48 clustered rows at 10 of 77 leaves,
    # recall@10 0.970 with residuals at 100, 0.939 without at 100, 0.986 without at 200. The
    # build's tuning picks its own; on 200k synthetic rows tuned recall@10 went 0.96 -> 0.98 and
    # a query 0.043 -> 0.034 ms.
    builder = builder.score_ah(
        dpb,
        anisotropic_quantization_threshold=params.anisotropic_threshold,
        training_sample_size=params.training_sample,
        residual_quantization=False,
    )
    return builder.reorder(max(params.reorder, k)).build()
