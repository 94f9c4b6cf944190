"""A tiny prepared workspace (8 demo photos, their ground truth, the training sets) for tests
that train or index on real data."""

from __future__ import annotations

from pathlib import Path

from tiefjax.catalog import init_workspace
from tiefjax.data.crops import PrepareConfig
from tiefjax.demo_catalog import load_ground_truth, make_demo_catalog
from tiefjax.prepare import prepare
from tiefjax.store import Store
from tiefjax.workspace import Workspace


def prepared_workspace(root: Path) -> Workspace:
    """``root/ws`` with the photos of ``root/demo``, annotated and prepared."""
    manifest = make_demo_catalog(root / "demo", n=8, seed=0)
    init_workspace(root / "ws", root / "demo" / "images")
    ws = Workspace(root / "ws")
    with Store(ws.store_path) as store:
        load_ground_truth(store, manifest, 0)
    cfg = PrepareConfig(test_fraction=0.3, short_sides=(256,), crops_per_scale=2, flips=False)
    prepare(ws, cfg)
    return ws
