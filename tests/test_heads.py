"""Heads: conv form == fully connected form on 11x11 windows; ranking identity init."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiefjax.nets.heads import (
    BoxRegressors,
    CropClassifier,
    RankingNet,
    normalize_locations,
    unsupervised_descriptor,
)

C = 16  # small channel count keeps the tests fast; the heads take any C


def _fmap(seed: int, h: int = 11, w: int = 11, b: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(b, h, w, C))).astype(np.float32)  # post-ReLU like features


def _dense(x: np.ndarray, p: dict) -> np.ndarray:
    k = np.asarray(p["kernel"])
    return x @ k.reshape(-1, k.shape[-1]) + np.asarray(p["bias"])


def _fc_classifier(params: dict, window: np.ndarray) -> np.ndarray:
    """The fully connected classifier on one flattened (11, 11, C) window (H, W, C order)."""
    x = window.reshape(window.shape[0], -1)
    x = np.maximum(_dense(x, params["fc1"]), 0)
    x = np.maximum(_dense(x, params["fc2"]), 0)
    return _dense(x, params["logits"])


def _fc_regressors(params: dict, window: np.ndarray, hidden: int, hidden2: int) -> np.ndarray:
    """Four separate fully connected nets written out one by one."""
    x = window.reshape(window.shape[0], -1)
    k1 = np.asarray(params["fc1"]["kernel"]).reshape(x.shape[1], -1)
    b1 = np.asarray(params["fc1"]["bias"])
    k2 = np.asarray(params["fc2"]["kernel"]).reshape(hidden, 4 * hidden2)  # grouped: in/group
    b2 = np.asarray(params["fc2"]["bias"])
    k3 = np.asarray(params["out"]["kernel"]).reshape(hidden2, 4)
    b3 = np.asarray(params["out"]["bias"])
    outs = []
    for i in range(4):
        h1 = np.maximum(
            x @ k1[:, i * hidden : (i + 1) * hidden] + b1[i * hidden : (i + 1) * hidden], 0
        )
        s2 = slice(i * hidden2, (i + 1) * hidden2)
        h2 = np.maximum(h1 @ k2[:, s2] + b2[s2], 0)
        outs.append(h2 @ k3[:, i] + b3[i])
    return np.stack(outs, axis=-1)


def _check_conv_equals_fc(
    net,
    *,
    init_seed: int,
    fmap_seed: int,
    outputs: int,
    fc: Callable[[dict, np.ndarray], np.ndarray],
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Init ``net`` on an 11x11 window and check its single output position against ``fc``.

    Returns the params, the input feature maps and the conv output.
    """
    params = net.init(jax.random.PRNGKey(init_seed), jnp.zeros((1, 11, 11, C)))["params"]
    x = _fmap(fmap_seed)
    out = np.asarray(net.apply({"params": params}, x))
    assert out.shape == (3, 1, 1, outputs)
    np.testing.assert_allclose(out[:, 0, 0], fc(params, x), rtol=1e-5, atol=1e-5)
    return params, x, out


def test_classifier_conv_equals_fc_and_slides():
    net = CropClassifier(hidden=32, hidden2=8)
    params, _, _ = _check_conv_equals_fc(
        net, init_seed=0, fmap_seed=1, outputs=2, fc=_fc_classifier
    )

    big = _fmap(2, h=14, w=13)
    slid = np.asarray(net.apply({"params": params}, big))
    assert slid.shape == (3, 4, 3, 2)
    for i in range(4):
        for j in range(3):
            want = _fc_classifier(params, big[:, i : i + 11, j : j + 11])
            np.testing.assert_allclose(slid[:, i, j], want, rtol=1e-4, atol=1e-4)


def test_regressors_are_four_independent_fc_nets():
    net = BoxRegressors(hidden=8, hidden2=4)
    params, x, out = _check_conv_equals_fc(
        net, init_seed=1, fmap_seed=3, outputs=4, fc=lambda p, w: _fc_regressors(p, w, 8, 4)
    )
    # independence: perturbing net 2's first-layer units changes only output 2
    p2 = jax.tree.map(lambda a: a, params)
    k = np.array(p2["fc1"]["kernel"])
    k[..., 2 * 8 : 3 * 8] += 0.5
    p2["fc1"]["kernel"] = jnp.asarray(k)
    out2 = np.asarray(net.apply({"params": p2}, x))
    changed = np.abs(out2 - out).max(axis=(0, 1, 2)) > 1e-6
    assert changed.tolist() == [False, False, True, False]


def test_ranking_identity_init_is_unsupervised_descriptor():
    net = RankingNet(channels=C)
    x = _fmap(4) + 0.01  # no all-zero location
    params = net.init(jax.random.PRNGKey(2), x)["params"]
    emb = np.asarray(net.apply({"params": params}, x))
    desc = np.asarray(unsupervised_descriptor(x))
    np.testing.assert_allclose(emb, desc, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, rtol=1e-6)


def test_descriptor_dot_is_mean_aligned_cosine():
    a, b = _fmap(5, b=1)[0], _fmap(6, b=1)[0]
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    da, db = np.asarray(unsupervised_descriptor(np.stack([a, b])))
    assert float(da @ db) == pytest.approx(float(cos.mean()), rel=1e-5)


def test_normalize_locations_keeps_zero_locations_zero():
    x = np.zeros((1, 2, 2, C), np.float32)
    x[0, 0, 0, 0] = 3.0
    y = np.asarray(normalize_locations(x))
    assert y[0, 0, 0, 0] == pytest.approx(1.0)
    assert np.all(np.isfinite(y)) and np.abs(y[0, 1]).max() == 0
