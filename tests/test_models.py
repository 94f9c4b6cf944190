"""Encoder loading (random init when nothing is ported) and the split-compiled CPU encode fn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tiefjax.images import normalize
from tiefjax.models import encode_fn, load_encoder, make_encode_fn
from tiefjax.nets.alexnet import AlexNetEncoder, init_encoder_params
from tiefjax.workspace import Workspace


def test_random_init_warns_once(tmp_path, capsys):
    ws = Workspace(tmp_path / "fresh")
    first = load_encoder(ws)
    err = capsys.readouterr().err
    assert first.source == "random" and first.imagenet_head is None
    assert "running without ImageNet weights" in err and "tiefjax port" in err
    second = load_encoder(ws)
    assert capsys.readouterr().err == ""  # said once per workspace and process
    same = jax.tree.map(np.array_equal, first.params, second.params)
    assert all(jax.tree.leaves(same))  # seeded
    load_encoder(Workspace(tmp_path / "quiet"), announce=False)
    assert capsys.readouterr().err == ""


def test_eigen_and_split_cpu_encoders_equal_the_plain_program():
    params = init_encoder_params(0)
    images = np.random.default_rng(0).integers(0, 256, (2, 240, 272, 3), dtype=np.uint8)
    split = np.asarray(make_encode_fn(jnp.float32, split=True)(params, images))
    single = np.asarray(make_encode_fn(jnp.float32, split=False)(params, images))
    plain = np.asarray(AlexNetEncoder().apply({"params": params}, normalize(images)))
    assert split.shape == single.shape == plain.shape == (2, 12, 14, 256)
    assert split.dtype == np.float32
    scale = np.abs(plain).max()
    assert np.abs(split - plain).max() <= 1e-5 * scale
    assert np.abs(single - plain).max() <= 1e-5 * scale
    assert encode_fn() is make_encode_fn(jnp.float32)  # compiled once per process
    # usable inside another jit too (e.g. a fused encode + descriptor step)
    fused = jax.jit(lambda p, x: encode_fn()(p, x).sum())
    assert np.isclose(float(fused(params, images)), float(split.sum()), rtol=1e-4)
