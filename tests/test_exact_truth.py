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
    read_blocks,
)


def test_blocks_are_bounded_in_bytes_at_the_full_dimension():
    rows = block_rows(FEATURE_DIM, 400)  # the full descriptor, two samples of 200 queries
    # the block as float32 plus 16 bytes a score (scores, their negation, argpartition's int64)
    assert rows * (4 * FEATURE_DIM + 16 * 400) <= EXACT_BLOCK_BYTES <= 256 * 2**20
    assert 1000 < rows < 65536
    assert block_rows(256, 1024) * (4 * 256 + 16 * 1024) <= EXACT_BLOCK_BYTES
    assert block_rows(10**9, 1) == 1  # never zero rows


def test_blocked_exact_search_equals_brute_force():
    rng = np.random.default_rng(3)
    x = l2_normalize(rng.standard_normal((700, 300)))
    q = l2_normalize(rng.standard_normal((9, 300)))
    rows = block_rows(300, 9, budget=40 * (4 * 300 + 16 * 9))  # 40 rows a block: 18 blocks
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


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_reading_a_memory_map_through_keeps_one_block_resident(tmp_path):
    """A build reads its descriptors (1 GB at a million 256-d rows) through in blocks: each
    block's pages are handed back, so the whole file never sits in the process's memory."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16384, 1024)).astype(np.float32)  # 64 MiB
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    seen, most = 0, 0
    for start, block in read_blocks(mapped, 1024):  # 4 MiB blocks
        np.testing.assert_array_equal(block, x[start : start + 1024])
        seen += len(block)
        most = max(most, _mapped_kib(path))
    # this block and what the kernel maps around a fault (up to a 2 MiB folio either side)
    assert seen == len(x) and most <= 8 * 1024 and _mapped_kib(path) <= 4 * 1024
    for start in range(0, len(x), 1024):  # the same reads without handing pages back
        assert float(mapped[start : start + 1024].sum()) == float(x[start : start + 1024].sum())
    assert _mapped_kib(path) > 60 * 1024  # all 64 MiB resident
    total = sum(float(b.sum()) for _, b in read_blocks(x, 5000))  # arrays in memory: as they are
    assert np.isclose(total, float(x.sum()), rtol=1e-4)
