"""Honest recall: settings are tuned on catalog queries other than the ones the reported recall
is measured on, and a build whose recall falls below its target says so."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from _index_fakes import FakeEncoder, make_workspace

from tiefjax.index import build
from tiefjax.index.build import build_index, current_build, recall_warnings
from tiefjax.index.config import IndexConfig
from tiefjax.index.descriptors import full_truth, reduce_descriptors, reduction_recall
from tiefjax.index.scann_index import VectorIndex, l2_normalize, split_queries
from tiefjax.search import Searcher

CFG = IndexConfig.tiny()


def test_split_queries_never_overlap_and_are_seeded():
    for n, sample in ((10_000, 200), (1000, 200), (401, 200), (7, 200), (2, 50)):
        split = split_queries(n, sample)
        each = min(sample, n // 2)
        assert len(split.tune) == len(split.report) == each
        assert not set(split.tune.tolist()) & set(split.report.tolist())
        assert len(set(split.tune.tolist())) == each and split.report.max() < n
        again = split_queries(n, sample)
        np.testing.assert_array_equal(split.tune, again.tune)
        np.testing.assert_array_equal(split.report, again.report)
    one = split_queries(1, 200)
    assert len(one.tune) == len(one.report) == 0


def test_reduction_tunes_its_width_on_one_sample_and_reports_on_the_other():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 2000)).astype(np.float32)
    y = l2_normalize(centres[rng.integers(0, 40, 600)] + 0.3 * rng.standard_normal((600, 2000)))
    red = reduce_descriptors(y, dim=8, fit_sample=300, recall_sample=60)
    split = red.queries
    assert split is not None and not set(split.tune.tolist()) & set(split.report.tolist())
    tune_truth, report_truth = full_truth(y, split)
    assert red.tried[-1][1] == round(reduction_recall(red.vectors, split.tune, tune_truth), 4)
    assert red.recall_at_10 == reduction_recall(red.vectors, split.report, report_truth)


def test_build_tunes_and_reports_on_disjoint_catalog_queries(tmp_path, monkeypatch):
    seen: dict[str, list[np.ndarray]] = {"tune": [], "report": []}
    phase = ["report"]
    autotune, probe = VectorIndex.autotune, VectorIndex._recall_probe

    def spy_autotune(self, *args, **kwargs):
        phase[0] = "tune"
        try:
            return autotune(self, *args, **kwargs)
        finally:
            phase[0] = "report"

    def spy_probe(self, rows, *args, **kwargs):
        seen[phase[0]].append(np.array(rows))
        return probe(self, rows, *args, **kwargs)

    reductions = []
    reduce = build.reduce_descriptors

    def spy_reduce(*args, **kwargs):
        reductions.append(reduce(*args, **kwargs))
        return reductions[-1]

    monkeypatch.setattr(VectorIndex, "autotune", spy_autotune)
    monkeypatch.setattr(VectorIndex, "_recall_probe", spy_probe)
    monkeypatch.setattr(build, "reduce_descriptors", spy_reduce)
    ws, _ = make_workspace(tmp_path, 20)
    build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)

    tune = set(np.concatenate(seen["tune"]).tolist())
    report = set(np.concatenate(seen["report"]).tolist())
    assert tune and report and not tune & report
    split = reductions[0].queries
    assert set(split.tune.tolist()) == tune and set(split.report.tolist()) == report


def test_recall_below_target_is_reported_with_the_setting_to_change(tmp_path, monkeypatch):
    reduce = build.reduce_descriptors
    monkeypatch.setattr(
        build,
        "reduce_descriptors",
        lambda *a, **kw: dataclasses.replace(reduce(*a, **kw), recall_at_10=0.9),
    )
    monkeypatch.setattr(VectorIndex, "measure_recall", lambda self, *a, **kw: 0.8)
    ws, _ = make_workspace(tmp_path, 8)
    report = build_index(ws, CFG, encoder=FakeEncoder(), locator=None, progress=False)

    summary = report.summary()
    assert "unsupervised: warning: reduction recall@10 vs full 0.900 is below [index] " in summary
    assert "min_reduction_recall 0.95: raise [index] dim (now 32)" in summary
    assert "unsupervised: warning: recall@10 vs exact 0.800 is below [index] target_recall" in (
        summary
    )
    meta = json.loads((current_build(ws) / "build.json").read_text())
    warnings = meta["modes"]["unsupervised"]["warnings"]
    assert len(warnings) == 2 and "[index] dim" in warnings[0]
    info = Searcher.load(ws, CFG, encoder=FakeEncoder()).info
    assert info["warnings"] == [f"unsupervised: {w}" for w in warnings]


def test_recall_warnings_name_the_setting_and_stay_quiet_when_targets_hold():
    cfg = IndexConfig()
    assert recall_warnings(0.95, 0.95, cfg, tuned=True) == []
    (fixed,) = recall_warnings(0.9, 1.0, cfg.with_(reorder=50), tuned=False)
    assert "leaves_to_search and reorder" in fixed
    (tuned,) = recall_warnings(0.9, 1.0, cfg, tuned=True)
    assert "target_recall" in tuned and "brute_force" in tuned
