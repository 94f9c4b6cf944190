"""On the demo catalog: photos of the same product rank high; supervised >= unsupervised.

Uses the real pipeline end to end at tiny sizes: demo catalog with ground-truth boxes and
triplets, the real (randomly initialised unless ported) encoder, prepare + ranking training.
Prints same-product recall@10 for both modes.
"""

from __future__ import annotations

import dataclasses

import pytest

from tiefjax.catalog import init_workspace
from tiefjax.demo_catalog import load_ground_truth, make_demo_catalog
from tiefjax.index.build import build_index
from tiefjax.index.config import IndexConfig
from tiefjax.prepare import PrepareConfig, prepare
from tiefjax.search import Searcher
from tiefjax.store import Store
from tiefjax.train.artifacts import train
from tiefjax.train.tasks import RankingConfig
from tiefjax.workspace import Workspace

pytestmark = pytest.mark.slow


def same_product_recall(searcher, manifest, mode: str, k: int = 10) -> float:
    """Mean over photos of the fraction of the product's other photos in the top k."""
    product = {p.id: p.product for p in manifest.photos}
    found = total = 0
    for pid in searcher.ids:
        others = {q for q, prod in product.items() if prod == product[pid] and q != pid}
        if not others:
            continue
        hits = {h.id for h in searcher.neighbours(pid, k, mode)}
        found += len(others & hits)
        total += len(others)
    return found / max(1, total)


def test_demo_catalog_recall_and_supervised_not_worse(tmp_path):
    manifest = make_demo_catalog(tmp_path / "demo", n=40, seed=0)
    init_workspace(tmp_path / "ws", tmp_path / "demo" / "images")
    ws = Workspace(tmp_path / "ws")
    with Store(ws.store_path) as store:
        load_ground_truth(store, manifest, seed=0)
    cfg = IndexConfig.tiny()

    build_index(ws, cfg, progress=False)
    s = Searcher.load(ws, cfg)
    chance = 10 / (len(s.ids) - 1)
    unsup = same_product_recall(s, manifest, "unsupervised")
    print(f"\ndemo catalog ({len(s.ids)} photos): same-product recall@10 unsupervised {unsup:.3f}")
    assert unsup > chance  # well above what random ranking gives

    prepare(ws, PrepareConfig.tiny())
    ranking_cfg = dataclasses.replace(RankingConfig.tiny(), steps=40)
    train(ws, "ranking", ranking_cfg, progress=False)
    report = build_index(ws, cfg, progress=False)
    assert report.encoded == 0  # unchanged photos: only the supervised descriptors are new
    assert s.reload_if_changed() and "supervised" in s.modes
    sup = same_product_recall(s, manifest, "supervised")
    unsup_again = same_product_recall(s, manifest, "unsupervised")
    print(f"same-product recall@10 supervised {sup:.3f} (unsupervised {unsup_again:.3f})")
    assert sup >= unsup_again - 0.01
