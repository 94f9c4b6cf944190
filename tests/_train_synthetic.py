"""Tiny synthetic feature-map data sets for the training tests (no encoder, no workspace)."""

from __future__ import annotations

import numpy as np

from tiefjax.train.features import FeatureSource

C = 8  # channels of the synthetic "feature maps" (the real encoder has 256)


def classification(n: int, seed: int) -> FeatureSource:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.abs(rng.normal(size=(n, 11, 11, C))).astype(np.float32)
    x[y == 1, 3:8, 3:8, 0] += 0.8  # foreground: a blob in channel 0
    return FeatureSource(x, {"image": np.arange(n)}, {"label": y})


def regression(n: int, seed: int) -> FeatureSource:
    rng = np.random.default_rng(seed)
    z = rng.uniform(size=(n, 4)).astype(np.float32)
    x = rng.normal(scale=0.3, size=(n, 11, 11, C)).astype(np.float32)
    x[..., :4] += z[:, None, None, :]
    target = np.stack(
        [20 + 40 * z[:, 0], 20 + 40 * z[:, 1], 150 + 60 * z[:, 2], 150 + 60 * z[:, 3]], axis=1
    ).astype(np.float32)
    return FeatureSource(x, {"image": np.arange(n)}, {"target": target})


def triplets(n: int, seed: int, groups: int = 6) -> FeatureSource:
    """Same-group images share a weak prototype; a strong "style" (independent of the group)
    dominates the unsupervised similarity. Negatives share the reference's style, positives do
    not, so the untrained (unsupervised) net gets most triplets wrong and training must learn to
    ignore the style channels."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(99).normal(size=(groups, 11, 11, 4))
    styles = np.random.default_rng(98).normal(scale=1.5, size=(3, 11, 11, C - 4))
    n_img = 4 * groups
    group = np.arange(n_img) % groups
    style = (np.arange(n_img) // groups) % 3
    x = np.empty((n_img, 11, 11, C), np.float32)
    x[..., :4] = protos[group] + rng.normal(scale=0.3, size=(n_img, 11, 11, 4))
    x[..., 4:] = styles[style] + rng.normal(scale=0.3, size=(n_img, 11, 11, C - 4))
    ref = rng.integers(0, n_img, n)
    idx = np.arange(n_img)
    pos = np.array([rng.choice(idx[(group == group[r]) & (style != style[r])]) for r in ref])
    neg = np.array([rng.choice(idx[(group != group[r]) & (style == style[r])]) for r in ref])
    return FeatureSource(x, {"reference": ref, "positive": pos, "negative": neg})


def stats(src: FeatureSource) -> tuple[np.ndarray, np.ndarray]:
    t = src.extras["target"]
    return t.mean(0), t.std(0)
