"""The hook scripts/bench/scale.py builds with: an index straight from descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from tiefjax.errors import InvalidInput
from tiefjax.index.build import build_from_descriptors, current_build
from tiefjax.index.config import IndexConfig
from tiefjax.index.encode import Row
from tiefjax.index.row_table import RowTable
from tiefjax.index.scann_index import l2_normalize
from tiefjax.search import Searcher
from tiefjax.store import ImageRecord, Store
from tiefjax.workspace import Workspace


def test_index_built_from_descriptors_is_searchable(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ids = [f"img-{i:03d}" for i in range(40)]
    with Store(ws.store_path) as store:
        store.upsert_images(ImageRecord(i, f"x/{i}.jpg", 64, 48, i * 4) for i in ids)
    x = l2_normalize(np.random.default_rng(0).standard_normal((40, 24)))
    listed = [Row(i, i * 4, (0.0, 0.0, 64.0, 48.0), "whole", None, True) for i in ids]
    rows = RowTable.from_rows(listed)
    report = build_from_descriptors(ws, x, rows, IndexConfig.tiny(), log=lambda m: None)
    assert report.images == 40 and report.modes["unsupervised"]["recall_at_10"] == 1.0
    assert current_build(ws).name == f"index-{report.path.split('index-')[-1]}"
    assert (current_build(ws) / "rows" / "done").is_file()  # its rows as memory-mapped columns
    searcher = Searcher.load(ws, IndexConfig.tiny())
    best = int(np.argsort(-(x[7] @ x.T))[1])
    assert searcher.neighbours("img-007", k=1, mode="unsupervised")[0].id == ids[best]
    with pytest.raises(InvalidInput, match="39 rows for 40 descriptors"):
        build_from_descriptors(ws, x, RowTable.from_rows(listed[:39]), IndexConfig.tiny())
