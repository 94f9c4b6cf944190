"""Descriptor reduction: an orthonormal projection fitted on the catalog, kept only if it keeps
recall@10 against the full-dimension exact score.

The unsupervised descriptor (30976-d) makes a big, slow index. Projecting onto the top right
singular vectors of the *uncentred* catalog matrix preserves dot products with every vector in
that span: when the basis spans the whole catalog (N <= dim) a query's dot product with each
catalog vector is unchanged, so small catalogs lose nothing. For large catalogs the truncation is
approximate, so every build measures recall@10 of the reduced search against exact full-dim
search and widens the projection until it holds (or keeps the full dimension). The width is
chosen on one sample of catalog queries and the recall reported is measured on another
(:func:`tiefjax.index.scann_index.split_queries`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiefjax.index.scann_index import (
    QuerySplit,
    block_rows,
    exact_neighbours,
    l2_normalize,
    read_blocks,
    recall_at_k,
    split_queries,
)

K = 10  # recall@K


@dataclass
class Projection:
    """``basis`` (d, D) orthonormal rows, or None for the identity (no reduction)."""

    basis: np.ndarray | None
    full_dim: int

    @property
    def dim(self) -> int:
        return self.full_dim if self.basis is None else int(self.basis.shape[0])

    def apply(self, x: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Project rows of ``x`` (may be a memory map) and L2-normalise them: (N, dim) float32,
        read ``chunk`` rows at a time (default: blocks of at most 256 MB at ``x``'s width)."""
        chunk = chunk or block_rows(int(x.shape[1]), self.dim)
        out = np.empty((x.shape[0], self.dim), np.float32)
        for s, block in read_blocks(x, chunk):
            out[s : s + chunk] = l2_normalize(block if self.basis is None else block @ self.basis.T)
        return out


def fit_basis(sample: np.ndarray, dim: int, seed: int = 0, power_iters: int = 2) -> np.ndarray:
    """Top-``dim`` right singular vectors of ``sample`` (n, D) as rows (dim, D), float32.

    When ``dim >= n`` the result is an orthonormal basis of the rows' span (exact).
    Randomised SVD otherwise (Halko et al.), so it stays cheap for D = 30976.
    """
    s = np.asarray(sample, np.float32)
    n, full = s.shape
    if dim >= n:
        q, r = np.linalg.qr(s.T)  # (D, n)
        keep = np.abs(np.diag(r)) > 1e-6 * max(1.0, float(np.abs(np.diag(r)).max(initial=0)))
        return np.ascontiguousarray(q[:, keep].T)
    rng = np.random.default_rng(seed)
    width = min(n, dim + 16)
    y = s.T @ rng.standard_normal((n, width)).astype(np.float32)  # (D, width)
    for _ in range(power_iters):
        y, _ = np.linalg.qr(y)
        y = s.T @ (s @ y)
    q, _ = np.linalg.qr(y)
    b = s @ q  # (n, width)
    _, _, wt = np.linalg.svd(b, full_matrices=False)
    return np.ascontiguousarray((q @ wt.T[:, :dim]).T)


def reduction_recall(reduced: np.ndarray, query_rows: np.ndarray, truth: np.ndarray) -> float:
    """recall@K of exact search on ``reduced`` against ``truth``, the full-dimension exact
    answers of the same ``query_rows`` (self excluded), computed once per build."""
    return recall_at_k(exact_neighbours(reduced, query_rows, K), truth, K)


def full_truth(full: np.ndarray, split: QuerySplit) -> tuple[np.ndarray, np.ndarray]:
    """Full-dimension exact answers of the tuning and the report queries, in one pass over the
    catalog in bounded blocks: the costly part of measuring a reduction, so it is done once and
    not at every widening step."""
    both = exact_neighbours(full, np.concatenate([split.tune, split.report]), K)
    return both[: len(split.tune)], both[len(split.tune) :]


@dataclass
class ReductionReport:
    projection: Projection
    vectors: np.ndarray  # (N, dim) reduced, L2-normalised
    recall_at_10: float  # reduced vs full-dim exact search on the report queries (1.0 unreduced)
    tried: list[tuple[int, float]]  # (dim, recall on the tuning queries) per attempt
    queries: QuerySplit | None = None  # the rows tuned on and reported on (None: not reduced)


def reduce_descriptors(
    full: np.ndarray,
    method: str = "svd",
    dim: int = 256,
    min_recall: float = 0.95,
    fit_sample: int = 8192,
    recall_sample: int = 200,
    seed: int = 0,
    queries: QuerySplit | None = None,
    max_bytes: int | None = None,
) -> ReductionReport:
    """Fit a projection on ``full`` (N, D unit rows) and widen it until recall@10 >= min_recall
    on the tuning queries; the recall reported is measured on the report queries (``queries``,
    else :func:`split_queries` of ``recall_sample``), which may fall below ``min_recall``.

    Falls back to the full dimension when no projection narrower than D keeps the recall. The
    reduced catalog (N x width float32) never grows past ``max_bytes`` by widening: then the
    widest projection that fits is kept, whatever its recall (a million rows at the full
    30,976 dimensions would be 124 GB).
    """
    n, full_dim = full.shape
    rng = np.random.default_rng(seed)
    if method == "none" or n == 0 or dim >= full_dim:
        proj = Projection(None, full_dim)
        return ReductionReport(proj, proj.apply(full), 1.0, [])
    if method != "svd":
        raise ValueError(f"unknown reduction {method!r}; use 'svd' or 'none'")
    split = queries or split_queries(n, recall_sample, seed)
    tune_truth, report_truth = full_truth(full, split)
    fit_rows = np.sort(rng.choice(n, size=min(n, fit_sample), replace=False))
    sample = np.asarray(full[fit_rows], np.float32)
    tried: list[tuple[int, float]] = []
    d = max(1, dim)
    while True:
        basis = fit_basis(sample, d, seed=seed)
        proj = Projection(basis, full_dim)
        vectors = proj.apply(full)
        lossless = d >= len(fit_rows) and len(fit_rows) == n
        recall = reduction_recall(vectors, split.tune, tune_truth)
        tried.append((proj.dim, round(recall, 4)))
        if recall >= min_recall or lossless:
            reported = reduction_recall(vectors, split.report, report_truth)
            return ReductionReport(proj, vectors, reported, tried, split)
        d *= 2
        if max_bytes is not None and n * min(d, full_dim) * 4 > max_bytes:
            reported = reduction_recall(vectors, split.report, report_truth)
            return ReductionReport(proj, vectors, reported, tried, split)
        if d >= min(full_dim, len(fit_rows)) and len(fit_rows) < n or d >= full_dim:
            proj = Projection(None, full_dim)
            return ReductionReport(proj, proj.apply(full), 1.0, tried + [(full_dim, 1.0)], split)
