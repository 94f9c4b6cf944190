"""Encoder loading (random init when nothing is ported) and the chunked CPU encode fn."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tiefjax.images import normalize
from tiefjax.models import CPU_CHUNK, load_encoder, make_encoder
from tiefjax.nets.alexnet import AlexNetEncoder, init_encoder_params, max_pool_3x3
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


def test_cpu_encoder_equals_the_plain_program_in_and_out_of_chunks():
    params = init_encoder_params(0)
    images = np.random.default_rng(0).integers(0, 256, (CPU_CHUNK + 3, 240, 272, 3), np.uint8)
    plain = np.asarray(AlexNetEncoder().apply({"params": params}, normalize(images)))
    scale = np.abs(plain).max()
    encoder = make_encoder(params, jnp.float32, cap=16)
    for n in (1, CPU_CHUNK, CPU_CHUNK + 3):  # less than, exactly and more than one chunk
        got = encoder(images[:n])
        assert got.shape == (n, 12, 14, 256) and got.dtype == np.float32
        assert np.abs(got - plain[:n]).max() <= 1e-5 * scale


def test_max_pool_equals_flax_max_pool_exactly():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 15, 12, 5)), jnp.float32)
    for stride in (1, 2):
        want = nn.max_pool(x, window_shape=(3, 3), strides=(stride, stride), padding="VALID")
        got = max_pool_3x3(x, stride)
        assert got.shape == want.shape
        assert np.array_equal(np.asarray(got), np.asarray(want))
