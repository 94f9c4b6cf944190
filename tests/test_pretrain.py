"""``tiefjax pretrain``: the contrastive loss, views, a tiny run that becomes the workspace's
encoder, resuming, discarding, and bad settings."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _index_fakes import make_workspace

from tiefjax.errors import InvalidInput
from tiefjax.pretrain import (
    HeldOutViews,
    PhotoViews,
    PretrainConfig,
    discard,
    nt_xent,
    pretrain,
)


def _reference_nt_xent(z1, z2, photo, scale):
    """NT-Xent written out example by example (NumPy), same-photo negatives left out."""
    z = np.concatenate([z1, z2])
    ids = np.concatenate([photo, photo])
    n = len(z1)
    losses, hits = [], []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        cands = [j for j in range(2 * n) if j == partner or ids[j] != ids[i]]
        logits = np.array([scale * z[i] @ z[j] for j in cands])
        logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        losses.append(-logp[cands.index(partner)])
        hits.append(cands[int(np.argmax(logits))] == partner)
    return float(np.mean(losses)), float(np.mean(hits))


def test_nt_xent_matches_a_per_example_reference_and_masks_repeated_photos():
    rng = np.random.default_rng(0)
    z1, z2 = (rng.standard_normal((6, 5)).astype(np.float32) for _ in range(2))
    z1 /= np.linalg.norm(z1, axis=1, keepdims=True)
    z2 /= np.linalg.norm(z2, axis=1, keepdims=True)
    photo = np.array([0, 1, 2, 1, 3, 4], np.int32)  # photo 1 drawn twice
    loss, acc = nt_xent(jnp.asarray(z1), jnp.asarray(z2), jnp.asarray(photo), jnp.float32(10.0))
    want_loss, want_acc = _reference_nt_xent(z1, z2, photo, 10.0)
    assert float(loss) == pytest.approx(want_loss, rel=1e-4)
    assert float(acc) == pytest.approx(want_acc)
    # identical views of distinct photos: the loss is near its floor
    low, acc = nt_xent(jnp.asarray(z1), jnp.asarray(z1), jnp.arange(6), jnp.float32(50.0))
    assert float(acc) == 1.0 and float(low) < float(loss)


def test_views_are_seeded_distinct_and_held_out_views_are_other_draws(tmp_path):
    ws, images = make_workspace(tmp_path, 4)
    paths = sorted(str(p) for p in images.iterdir())
    cfg = PretrainConfig.tiny(strength=1.0)
    views = PhotoViews(paths, 8, cfg, trim=True)
    a, b = views[5], views[5]
    assert a["view1"].shape == (224, 224, 3) and a["view1"].dtype == np.uint8
    assert int(a["photo"]) == 1 and np.array_equal(a["view1"], b["view1"])  # same seed, same view
    assert not np.array_equal(a["view1"], a["view2"])  # two different draws
    assert not np.array_equal(views[1]["view1"], a["view1"])  # photo 1 again, new views
    held = HeldOutViews(paths, cfg, trim=True)
    assert len(held) == 4 and not any(
        np.array_equal(held[i]["view2"], a["view1"]) for i in range(4)
    )


def test_a_tiny_run_becomes_the_encoder_resumes_and_can_be_discarded(tmp_path, capsys):
    from tiefjax.index.encode import encoder_fingerprint
    from tiefjax.models import load_encoder
    from tiefjax.nets.alexnet import init_encoder_params

    ws, _ = make_workspace(tmp_path, 6)
    before = encoder_fingerprint(ws)
    cfg = PretrainConfig.tiny(steps=2, eval_every=2, checkpoint_every=1, log_every=1)
    report = pretrain(ws, cfg, progress=False)
    assert report.step == 2 and report.base == "random" and report.resumed_from == 0
    assert (
        set(report.baseline) == {"copy_recall_at_1"}
        and 0 <= report.metrics["copy_recall_at_1"] <= 1
    )
    loaded = load_encoder(ws)
    assert loaded.source == "pretrained" and encoder_fingerprint(ws) != before
    base = init_encoder_params(0)
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), loaded.params, base
    )
    assert max(jax.tree.leaves(moved)) > 0  # trained
    assert set(loaded.params) == set(base)  # the plain AlexNet layout: nothing training-only kept
    lines = [
        json.loads(x) for x in (ws.train_dir("pretrain") / "metrics.jsonl").read_text().splitlines()
    ]
    assert [(r["step"], r["split"]) for r in lines if r["split"] == "test"] == [
        (0, "test"),
        (2, "test"),
    ]

    more = pretrain(ws, cfg, steps=3, progress=False)  # continues, from the base encoder's run
    assert more.resumed_from == 2 and more.step == 3 and more.base == "random"

    assert discard(ws) and load_encoder(ws).source == "random" and encoder_fingerprint(ws) == before
    assert not discard(ws)


def test_bad_settings_and_too_few_photos_are_one_line_errors(tmp_path):
    with pytest.raises(InvalidInput, match="objective must be one of descriptor, pooled"):
        PretrainConfig(objective="byol")
    with pytest.raises(InvalidInput, match="strength"):
        PretrainConfig(strength=2.0)
    ws, _ = make_workspace(tmp_path, 1)
    with pytest.raises(InvalidInput, match="at least 2 catalog photos"):
        pretrain(ws, PretrainConfig.tiny(), progress=False)
    with pytest.raises(InvalidInput, match=r"unknown pretrain setting\(s\) \['stepz'\]"):
        pretrain(ws, PretrainConfig.tiny(), progress=False, stepz=3)


def test_photos_with_a_known_box_give_views_of_the_product_half_of_the_time(tmp_path):
    from PIL import Image

    img = np.zeros((300, 400, 3), np.uint8)
    img[:, :200] = (200, 30, 30)  # the "product": the red left half
    img[:, 200:] = (30, 30, 200)
    path = tmp_path / "p.png"
    Image.fromarray(img).save(path)
    cfg = PretrainConfig.tiny(strength=0.0, decode_short_side=224)
    views = PhotoViews([str(path)], 16, cfg, trim=False, boxes=[(0.0, 0.0, 200.0, 300.0)])
    red = [float(np.mean(views[i]["view1"][..., 0] > 100)) for i in range(16)]
    assert any(r > 0.8 for r in red) and any(r < 0.6 for r in red)
    plain = PhotoViews([str(path)], 16, cfg, trim=False)
    assert all(0.4 < float(np.mean(plain[i]["view1"][..., 0] > 100)) < 0.6 for i in range(16))
