"""Each task learns on tiny synthetic feature maps: loss falls, test metric beats chance."""

from __future__ import annotations

import _train_synthetic as syn
import numpy as np
import pytest

from tiefjax.train.loop import run_loop
from tiefjax.train.tasks import (
    ClassifierConfig,
    RankingConfig,
    RegressorConfig,
    box_iou,
    make_task,
)


def _losses(result, split="train"):
    return [r["loss"] for r in result.history if r["split"] == split]


def test_classifier_learns(tmp_path):
    cfg = ClassifierConfig.tiny(steps=30, learning_rate=3e-3)
    task = make_task("classifier", cfg, channels=syn.C)
    r = run_loop(task, syn.classification(256, 0), syn.classification(96, 1), cfg, tmp_path)
    losses = _losses(r)
    assert losses[-1] < 0.7 * losses[0]
    assert r.metrics["accuracy"] >= 0.85 > r.baseline["accuracy"]
    assert r.metrics["accuracy"] > r.metrics["chance"] + 0.25


def test_regressor_learns_boxes(tmp_path):
    train, test = syn.regression(256, 0), syn.regression(96, 1)
    cfg = RegressorConfig.tiny(steps=40, learning_rate=3e-3)
    task = make_task("regressor", cfg, regression_stats=syn.stats(train), channels=syn.C)
    r = run_loop(task, train, test, cfg, tmp_path)
    losses = _losses(r)
    assert losses[-1] < 0.5 * losses[0]
    m = r.metrics
    assert m["iou"] > 0.85 and m["iou"] > m["baseline_iou"] + 0.05
    assert 1.25 * m["mae_px"] < m["baseline_mae_px"]  # the original's acceptance rule


def test_ranking_beats_unsupervised_baseline(tmp_path):
    cfg = RankingConfig.tiny(steps=40, learning_rate=1e-2, margin=0.1)
    task = make_task("ranking", cfg, channels=syn.C)
    r = run_loop(task, syn.triplets(256, 0), syn.triplets(128, 1), cfg, tmp_path)
    losses = _losses(r)
    assert losses[-1] < 0.7 * losses[0]
    assert r.metrics["accuracy"] >= r.baseline["accuracy"] + 0.15
    assert r.metrics["accuracy"] >= 0.85


def test_ranking_loss_orders_positive_above_negative():
    """The hinge is zero when s(H,H+) exceeds s(H,H-) by the margin, positive otherwise."""
    import jax

    cfg = RankingConfig.tiny(margin=0.1)
    task = make_task("ranking", cfg, channels=syn.C)
    params = task.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 11, 11, syn.C)).astype(np.float32)
    far = rng.normal(size=(1, 11, 11, syn.C)).astype(np.float32)
    good = {"reference": a, "positive": a, "negative": far}
    bad = {"reference": a, "positive": far, "negative": a}
    assert float(task.loss(params, good)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(task.loss(params, bad)[0]) > 1.0


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [1.0, 1 / 3, 0.0])
    touching = np.array([[10, 10, 20, 20]], float)  # shares only a corner: no overlap
    np.testing.assert_allclose(box_iou(a[:1], touching), [0.0])


def test_finetune_encoder_step_trains_encoder(tmp_path):
    """With images (uint8) the encoder runs inside the step and its params change."""
    import jax

    from tiefjax.nets.alexnet import init_encoder_params
    from tiefjax.train.features import FeatureSource

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(4, 224, 224, 3), dtype=np.uint8)
    src = FeatureSource(imgs, {"image": np.arange(4)}, {"label": np.array([0, 1, 0, 1])})
    enc = init_encoder_params(0)
    cfg = ClassifierConfig.tiny(
        steps=2, batch_size=2, finetune_encoder=True, encoder_learning_rate=1e-3, warmup_steps=0
    )
    task = make_task("classifier", cfg, encoder_params=enc)
    r = run_loop(task, src, None, cfg, tmp_path)
    diff = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), r.params["encoder"], enc
    )
    assert max(jax.tree.leaves(diff)) > 0
