"""Training feature cache at scale, one child process of ``scripts/bench/scale.py``.

Caches N distinct synthetic 224x224 crops through :func:`tiefjax.train.features.cached_features`
exactly as training does (content addresses, prefetch, batches of 32, atomic folder), with its
``encode`` hook given a cheap stand-in for the CNN that returns the real 11x11x256 feature maps
(the pixels repeated), so the figures are the cache's own: peak RSS while caching (the issue's
target: 2 GB at 200,000 crops), then one pass reading every example back as training does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scale import GIB, _reset_peak, _status_kib

FEATURE_SHAPE = (11, 11, 256)  # the encoder's feature map (DESIGN.md, "Contracts")


class Crops:
    """``n`` distinct crops: one random image with the example's index written in its first
    pixels, so no two share a content address (none is deduplicated away)."""

    def __init__(self, n: int, size: int = 224, seed: int = 0):
        self.n = n
        self.base = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        image = self.base.copy()
        image.reshape(-1)[:8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
        return {"image": image, "label": np.int32(i % 2)}


def fake_encode(_params: object, batch: np.ndarray) -> np.ndarray:
    """Stand-in for the CNN: (B, 224, 224, 3) uint8 -> (B, 11, 11, 256) float32."""
    corner = batch[:, : FEATURE_SHAPE[0], : FEATURE_SHAPE[1], :1].astype(np.float32)
    return np.repeat(corner, FEATURE_SHAPE[2], axis=-1)


def child(n: int, folder: Path) -> dict:
    """Cache ``n`` crops under ``folder``, then read every example back; time and memory."""
    from tiefjax.train.features import cached_features

    src = Crops(n)
    _reset_peak()
    before = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    feats = cached_features(
        src, np.zeros(1), cache_root=folder, name="bench", fingerprint="x", encode=fake_encode
    )
    cache_s = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    read = 0
    for i in range(len(feats)):  # as a training epoch reads them, one example at a time
        read += np.array(feats[i]["image"]).nbytes  # a copy: really read from the file
    read_s = time.perf_counter() - t0
    return {
        "part": "training feature cache",
        "crops": n,
        "cache_s": round(cache_s, 1),
        "crops_per_s": round(n / cache_s),
        "rss_before_gib": round(before / GIB, 3),
        "peak_rss_caching_gib": round(peak / GIB, 3),
        "target_gib": 2.0,
        "within_target": peak <= 2 * GIB,
        "features_on_disk_gib": round(on_disk / GIB, 2),
        "memory_mapped": type(feats.features).__name__,
        "read_all_s": round(read_s, 1),
        "read_gib_per_s": round(read / GIB / read_s, 2),
        # after the read pass: anonymous memory (the heap) vs pages of the mapped file, which
        # the kernel counts in RSS while cached and drops under memory pressure
        "rss_anon_after_read_gib": round(_status_kib("RssAnon") * 1024 / GIB, 3),
        "rss_file_after_read_gib": round(_status_kib("RssFile") * 1024 / GIB, 3),
    }
