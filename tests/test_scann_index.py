"""ScaNN / exact index: recall against exact NumPy search, persistence, crash-safe builds."""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest

from tiefjax.errors import InvalidInput
from tiefjax.index.config import IndexConfig
from tiefjax.index.scann_index import (
    IndexParams,
    VectorIndex,
    choose_params,
    exact_search,
    l2_normalize,
    native_info_held_back,
    recall_at_k,
)


def clustered(n: int, dim: int, clusters: int = 50, spread: float = 0.4, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * spread
    return l2_normalize(centres[labels] + noise)


@pytest.fixture(scope="module")
def data():
    x = clustered(6000, 48)
    q = clustered(200, 48, seed=1)  # same centres (seeded), new points
    return x, q


def test_exact_search_matches_argsort(data):
    x, q = data
    ids, scores = exact_search(x, q[:20], 10, chunk=1000)  # chunked path
    full = q[:20] @ x.T
    want = np.argsort(-full, axis=1)[:, :10]
    assert recall_at_k(ids, want) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-5)


def test_choose_params_from_n():
    cfg = IndexConfig()
    assert choose_params(100, cfg).kind == "exact"
    assert choose_params(5000, cfg).kind == "brute_force"
    assert choose_params(30000, cfg).kind == "ah"
    big = choose_params(1_000_000, cfg)
    assert big.kind == "tree" and big.num_leaves == 1000 and 0 < big.leaves_to_search < 1000
    assert choose_params(100, cfg.with_(kind="tree", num_leaves=7)).num_leaves == 7
    with pytest.raises(InvalidInput, match="kind"):
        IndexConfig(kind="hnsw")


def test_autotune_reaches_target_from_cheap_settings():
    x = clustered(8000, 48, spread=0.6)  # harder: noisy clusters
    index = VectorIndex.build(x, choose_params(len(x), IndexConfig(kind="tree")))
    recall = index.autotune(0.95, sample=200)
    assert recall >= 0.95 and index.params.leaves_to_search <= index.params.num_leaves
    assert index.measure_recall(200, seed=1) >= 0.93  # holds on other queries too


@pytest.mark.parametrize("kind", ["brute_force", "ah", "tree"])
def test_scann_recall_vs_exact(data, kind):
    x, q = data
    params = choose_params(len(x), IndexConfig(kind=kind))
    index = VectorIndex.build(x, params)
    truth, _ = exact_search(x, q, 10)
    found, scores = index.search(q, 10)
    recall = recall_at_k(found, truth, 10)
    print(f"{kind}: recall@10 = {recall:.3f}")
    assert recall >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    one_ids, _ = index.search(q[0], 10)  # single-query path
    assert recall_at_k(one_ids, truth[:1]) >= 0.9
    assert index.measure_recall(100) >= 0.95


def test_native_info_lines_are_held_back_and_the_rest_passed_on(capfd):
    with native_info_held_back():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are\n")
        os.write(2, b"I0000 00:00:1795634868.786177    7515 factory_impl.h:178] chatter\n")
        os.write(2, b"I1125 19:27:48.786177    7515 factory_impl.h:178] more chatter\n")
        os.write(2, b"E1125 19:27:48.786177    7515 scann.cc:1] a real error\n")
        print("a Python line", file=sys.stderr)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "a Python line" in err and err.endswith("after\n")
    assert "chatter" not in err and "InitializeLog" not in err


def test_building_a_tree_index_prints_no_native_chatter(data, capfd):
    x, _ = data
    VectorIndex.build(x, choose_params(len(x), IndexConfig(kind="tree")))
    err = capfd.readouterr().err
    assert not re.search(r"^I\d{4} ", err, re.M), err[:500]


@pytest.mark.parametrize("kind", ["exact", "brute_force", "ah", "tree"])
def test_save_load_same_answers(tmp_path, data, kind):
    """Saved, then moved (builds are renamed into place), then loaded: the same answers."""
    x, q = data
    index = VectorIndex.build(x, choose_params(len(x), IndexConfig(kind=kind)))
    index.save(tmp_path / "build-tmp")
    (tmp_path / "build-tmp").rename(tmp_path / "ix")
    again = VectorIndex.load(tmp_path / "ix")
    assert again.params == index.params
    a_ids, a_scores = index.search(q, 10)
    b_ids, b_scores = again.search(q, 10)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["params"]["kind"] == kind


def test_load_build_saved_with_absolute_asset_paths(tmp_path, data):
    """Builds saved before asset paths were relative still load after being renamed."""
    x, q = data
    index = VectorIndex.build(x, choose_params(len(x), IndexConfig(kind="tree")))
    index.save(tmp_path / "build-tmp")
    index._searcher.serialize(str(tmp_path / "build-tmp" / "scann"))  # absolute paths, as before
    assets = (tmp_path / "build-tmp" / "scann" / "scann_assets.pbtxt").read_text()
    assert str(tmp_path / "build-tmp") in assets
    (tmp_path / "build-tmp").rename(tmp_path / "ix")
    again = VectorIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(again.search(q, 10)[0], index.search(q, 10)[0])


def test_single_query_path_matches_batched(data):
    x, q = data
    index = VectorIndex.build(x, choose_params(len(x), IndexConfig(kind="tree")))
    ids, scores = index.search(q[:2], 10)
    for i in range(2):
        for query in (q[i], q[i : i + 1], q[i].astype(np.float64), q[i].tolist()):
            one_ids, one_scores = index.search(query, 10)
            assert one_ids.shape == (1, 10) and one_ids.dtype == np.int64
            assert one_scores.dtype == np.float32
            np.testing.assert_array_equal(one_ids[0], ids[i])
            np.testing.assert_allclose(one_scores[0], scores[i], rtol=1e-5)
    assert index.search(q[0], 0)[0].shape == (1, 0)
    assert index.search(q[0], len(x) + 5)[0].shape == (1, len(x))


def test_scann_simd_levels_follow_the_cpu():
    from tiefjax.index.scann_index import _SIMD_LEVELS, _cpu_flags, enable_scann_simd

    levels = enable_scann_simd()
    assert enable_scann_simd() is levels  # once per process
    cpu = _cpu_flags()
    expected = []
    for level, needs in _SIMD_LEVELS:
        if not cpu.issuperset(needs):
            break
        expected.append(level)
    if os.environ.get("TIEFJAX_SCANN_SIMD", "1") != "0":
        assert levels == expected


def test_autotune_slack_only_adds_recall():
    x = clustered(8000, 48, spread=0.6)
    index = VectorIndex.build(x, choose_params(len(x), IndexConfig(kind="ah")))
    cheapest = index.autotune(0.95, sample=200, slack=0)  # the fewest re-ranked reaching 0.96
    plain = index.params
    more = index.autotune(0.95, sample=200)  # then more while nearly free
    assert cheapest >= 0.96 and more >= cheapest
    assert index.params.reorder >= plain.reorder


def test_tiny_and_empty():
    x = clustered(3, 8)
    ix = VectorIndex.build(x, IndexParams(kind="brute_force"))
    ids, _ = ix.search(x[:1], 10)  # k larger than N is clamped
    assert ids.shape == (1, 3) and ids[0, 0] == 0
    empty = VectorIndex.build(np.zeros((0, 8), np.float32))
    assert empty.search(x[:1], 5)[0].shape == (1, 0)


CRASH_SCRIPT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from _index_fakes import FakeEncoder
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.workspace import Workspace

class Stalling(FakeEncoder):
    def start(self, windows):
        Path(sys.argv[3]).write_text("encoding")
        time.sleep(120)  # killed here, mid-build
        return super().start(windows)

build_index(Workspace(sys.argv[1]), IndexConfig.tiny(), encoder=Stalling(), locator=None)
"""


def test_killed_build_leaves_previous_index_usable(tmp_path):
    from _index_fakes import FakeEncoder, kill_when_marked, make_catalog, make_workspace

    from tiefjax.catalog import init_workspace
    from tiefjax.index.build import build_index, current_build
    from tiefjax.search import Searcher

    ws, images = make_workspace(tmp_path, 6)
    build_index(ws, IndexConfig.tiny(), encoder=FakeEncoder(), locator=None, progress=False)
    before = Searcher.load(ws, IndexConfig.tiny(), encoder=FakeEncoder())
    answer = before.search("p001", k=3)
    live = current_build(ws)

    make_catalog(images, 3, start=100)  # new photos: the next build has work to do
    init_workspace(ws.root, images)
    kill_when_marked(CRASH_SCRIPT, ws.root, tmp_path, "started encoding")
    assert list(ws.index_dir.glob(".tmp-*")), "the killed build left its temporary folder"
    assert current_build(ws) == live
    after = Searcher.load(ws, IndexConfig.tiny(), encoder=FakeEncoder())
    assert after.search("p001", k=3) == answer
    assert "p100" not in after.ids

    report = build_index(ws, IndexConfig.tiny(), encoder=FakeEncoder(), progress=False)
    assert report.encoded == 3 and report.reused == 6
    assert not list(ws.index_dir.glob(".tmp-*"))
    assert after.reload_if_changed() and "p100" in after.ids
