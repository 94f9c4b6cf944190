"""Exact ground truth for recall stays bounded in memory: byte-bounded blocks, a bounded query
sample, and the full-dimension answers computed once per reduction, not at every widening."""

from __future__ import annotations

import numpy as np

from tiefjax.index import descriptors, scann_index
from tiefjax.index.descriptors import reduce_descriptors
from tiefjax.index.encode import FEATURE_DIM
from tiefjax.index.scann_index import (
    EXACT_BLOCK_BYTES,
    block_rows,
    exact_neighbours,
    exact_search,
    l2_normalize,
)


def test_blocks_are_bounded_in_bytes_at_the_full_dimension():
    rows = block_rows(FEATURE_DIM, 400)  # the full descriptor, two samples of 200 queries
    assert rows * (FEATURE_DIM + 400) * 4 <= EXACT_BLOCK_BYTES <= 256 * 2**20
    assert 1000 < rows < 65536
    assert block_rows(256, 1024) * (256 + 1024) * 4 <= EXACT_BLOCK_BYTES
    assert block_rows(10**9, 1) == 1  # never zero rows


def test_blocked_exact_search_equals_brute_force():
    rng = np.random.default_rng(3)
    x = l2_normalize(rng.standard_normal((700, 300)))
    q = l2_normalize(rng.standard_normal((9, 300)))
    rows = block_rows(300, 9, budget=40 * 4 * 309)  # 40 rows a block: 18 blocks
    assert rows == 40
    ids, scores = exact_search(x, q, 10, chunk=rows)
    full = q @ x.T
    want = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-5)
    truth = exact_neighbours(x, np.array([3, 500]), 5)  # the query's own row left out
    assert truth.shape == (2, 5) and 3 not in truth[0] and 500 not in truth[1]
    np.testing.assert_array_equal(truth[0], np.argsort(-(x[3] @ x.T))[1:6])


def test_full_dimension_truth_is_computed_once_while_the_reduction_widens(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 2000)).astype(np.float32)
    y = l2_normalize(centres[rng.integers(0, 40, 600)] + 0.3 * rng.standard_normal((600, 2000)))
    calls: list[tuple[int, int]] = []  # (database dim, queries)
    search = scann_index.exact_search

    def counting(database, queries, *args, **kwargs):
        calls.append((database.shape[1], np.atleast_2d(queries).shape[0]))
        return search(database, queries, *args, **kwargs)

    monkeypatch.setattr(scann_index, "exact_search", counting)
    monkeypatch.setattr(descriptors, "exact_search", counting, raising=False)  # older imports
    red = reduce_descriptors(y, dim=4, fit_sample=300, recall_sample=60)
    assert len(red.tried) >= 3  # widened 4 -> 8 -> 16 ...
    full = [c for c in calls if c[0] == 2000]
    assert full == [(2000, 120)]  # one pass: both samples (60 + 60) as queries


def test_the_reduction_never_widens_past_its_memory_budget():
    rng = np.random.default_rng(0)
    y = l2_normalize(rng.standard_normal((600, 2000)).astype(np.float32))  # no low-rank shape
    unbounded = reduce_descriptors(y, dim=4, min_recall=1.0, fit_sample=300, recall_sample=60)
    assert unbounded.vectors.shape == (600, 2000)  # fell back to the full dimension
    budget = 600 * 32 * 4  # room for 32 dims, not 64
    bounded = reduce_descriptors(
        y, dim=4, min_recall=1.0, fit_sample=300, recall_sample=60, max_bytes=budget
    )
    assert bounded.vectors.shape == (600, 32) and bounded.vectors.nbytes <= budget
    assert [d for d, _ in bounded.tried] == [4, 8, 16, 32]
    assert bounded.recall_at_10 < 1.0  # what is reported is what the kept width reaches
