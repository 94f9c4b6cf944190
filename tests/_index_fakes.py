"""Small, fast stand-ins for the index tests: catalogs of tiny photos and a fake encoder.

The fake encoder maps a 224x224 window to an 11x11x256 "feature map" with a fixed random
projection of its pooled colours, per-location normalised like the real one, so similar photos
get similar descriptors without compiling AlexNet.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from tiefjax.index.encode import FEATURE_DIM, FeatureEncoder


class FakeEncoder(FeatureEncoder):
    def __init__(self, batch_size: int = 4, fingerprint: str = "fake-1"):
        self.params = None
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.source = "fake"
        self.calls = 0
        self.windows = 0  # windows encoded, over all calls
        rng = np.random.default_rng(1)
        self._proj = rng.standard_normal((3, 256)).astype(np.float32)
        self._bias = rng.standard_normal((11, 11, 256)).astype(np.float32) * 0.2

    def start(self, windows: np.ndarray):
        self.calls += 1
        self.windows += len(windows)
        assert windows.dtype == np.uint8 and windows.shape[1:] == (224, 224, 3)
        n = len(windows)
        x = windows[:, :220, :220].astype(np.float32).reshape(n, 11, 20, 11, 20, 3)
        pooled = x.mean(axis=(2, 4)) / 255.0 - 0.5  # (n, 11, 11, 3)
        fmap = np.maximum(pooled @ self._proj + self._bias, 0.0) + 1e-3
        fmap /= np.linalg.norm(fmap, axis=-1, keepdims=True)
        return fmap.reshape(n, FEATURE_DIM), n

    @staticmethod
    def fetch(handle):
        return handle[0]


class FakeLocated:
    def __init__(self, img):
        self.box = (1.0, 2.0, img.width - 3.0, img.height - 4.0)
        self.probability = 0.9
        self.fallback = False


class FakeLocator:
    """Finds (1, 2, width - 3, height - 4) in the photo it is given; looks at ``short_side``."""

    def __init__(self, short_side: int = 448):
        self.config = SimpleNamespace(decode_short_side=short_side)
        self.sizes: list[tuple[int, int]] = []

    def locate_many(self, imgs):
        self.sizes += [img.size for img in imgs]
        return [FakeLocated(i) for i in imgs]

    @staticmethod
    def uncertainty(found):
        from tiefjax.review import box_uncertainty

        return box_uncertainty(found.probability, found.fallback, 0.0, 0.5)


def photo(seed: int, size: tuple[int, int] = (96, 72), base: tuple[int, int, int] | None = None):
    """A small photo: a coloured blob on a background, different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = base or tuple(int(v) for v in rng.integers(0, 255, 3))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = base
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    img[y0 : y0 + h // 2, x0 : x0 + w // 2] = rng.integers(0, 255, 3)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def make_catalog(folder: Path, n: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(start, start + n):
        ids.append(f"p{i:03d}")
        photo(i).save(folder / f"p{i:03d}.jpg", quality=92)
    return ids


def make_workspace(tmp: Path, n: int = 8):
    from tiefjax.catalog import init_workspace
    from tiefjax.workspace import Workspace

    images = tmp / "images"
    make_catalog(images, n)
    init_workspace(tmp / "ws", images)
    return Workspace(tmp / "ws"), images


def kill_when_marked(script: str, ws_root: Path, tmp_path: Path, stage: str) -> None:
    """Run a build ``script`` (args: workspace, tests folder, marker file) in a subprocess and
    SIGKILL it as soon as it has written its marker: the build has reached ``stage``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker, path = tmp_path / "marker", tmp_path / "build_script.py"
    path.write_text(script)
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, str(path), str(ws_root), tests_dir, str(marker)])
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, f"the build ended before it {stage}"
            assert time.time() < deadline, f"the build did not get to {stage} in time"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
