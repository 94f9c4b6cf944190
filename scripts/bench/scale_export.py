"""``tiefjax export-site`` at scale, one child process of ``scripts/bench/scale.py``.

A workspace of N synthetic images (store rows and clustered descriptors, as the index part
writes them) gets its index from :func:`tiefjax.index.build.build_from_descriptors` (untimed),
then :func:`tiefjax.export_site.export_site` writes the static site: pages, record and neighbour
shards, stats. Without ``--export-media`` the photos are never written, so the export's copier
(``tiefjax.export_site._copier``, the hook this replaces) copies nothing: the figures are the
data files only. With it, each image is a real small JPEG and its copy and thumbnail are made as
they are for any catalog.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from scale import GIB, _reset_peak, _status_kib, _write_catalog


def _write_photos(ws: Any, folder: Path, size: tuple[int, int] = (64, 48)) -> None:
    """One small JPEG per image under ``folder``, its store row pointed at it."""
    from PIL import Image

    from tiefjax.store import ImageRecord, Store

    buf = io.BytesIO()
    Image.new("RGB", size, (120, 90, 60)).save(buf, "JPEG")
    folder.mkdir(parents=True)
    with Store(ws.store_path) as store:
        records = store.list_images()
        for rec in records:
            (folder / f"{rec.id}.jpg").write_bytes(buf.getvalue())
        store.upsert_images(
            ImageRecord(r.id, str(folder / f"{r.id}.jpg"), *size, r.sha256) for r in records
        )


def child(n: int, dim: int, folder: Path, media: bool) -> dict:
    """Export ``n`` synthetic images; time, size and peak memory of the export."""
    import tiefjax.export_site as export_module
    from tiefjax.index.build import build_from_descriptors
    from tiefjax.index.config import IndexConfig

    size = (64, 48) if media else (640, 480)
    ws, vectors, rows = _write_catalog(folder, n, dim, clusters=max(50, n // 200), size=size)
    if media:
        _write_photos(ws, folder / "photos", size)
    else:
        export_module._copier = lambda ws, static, size: lambda rec: None
    build_from_descriptors(ws, vectors, rows, IndexConfig(), log=lambda m: None)
    del vectors, rows
    _reset_peak()
    t0 = time.perf_counter()
    report = export_module.export_site(ws, folder / "out", site_dir=_site_dir())
    seconds = time.perf_counter() - t0
    data_files = list((folder / "out" / "static").rglob("*.js"))  # tiefjaxData(<JSON>); each
    return {
        "part": "export-site",
        "images": n,
        "media": media,
        "export_s": round(seconds, 1),
        "files": report.files,
        "mb": round(report.bytes / 1e6, 1),
        "data_files": len(data_files),
        "largest_data_kb": round(max(p.stat().st_size for p in data_files) / 1e3, 1),
        "shard_digits": export_module.shard_digits(n),
        "modes": report.modes,
        "peak_rss_gib": round(_status_kib("VmHWM") * 1024 / GIB, 3),
    }


def _site_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "site"
