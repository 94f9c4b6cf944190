"""bfloat16 compute on the CPU: feature maps near float32, and the same neighbours on the demo
catalog (what `[compute] dtype = "auto"` gives on GPUs; the CPU runs it only for this check)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from PIL import Image

from tiefjax.demo import SIZES
from tiefjax.demo_catalog import make_demo_catalog
from tiefjax.index.encode import FeatureEncoder
from tiefjax.models import make_encoder, resolve_dtype
from tiefjax.nets.alexnet import PATCH, init_encoder_params

#: stated tolerance: the largest bf16 - float32 difference of a feature map, relative to the
#: map's largest value (bf16 keeps 8 bits of mantissa; five convolutions add up their rounding)
MAP_TOLERANCE = 0.015


def _windows(n: int, tmp_path) -> np.ndarray:
    make_demo_catalog(tmp_path / "demo", n=n, seed=0)
    photos = sorted((tmp_path / "demo" / "images").iterdir())
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in photos])


def test_auto_dtype_is_float32_on_the_cpu():
    assert resolve_dtype("auto") == jnp.float32 and resolve_dtype("bfloat16") == jnp.bfloat16


def test_bf16_maps_stay_near_float32_and_keep_the_top_10(tmp_path):
    n = SIZES["default"].photos
    windows = _windows(n, tmp_path)
    params = init_encoder_params(0)
    maps = {d: make_encoder(params, d)(windows[:16]) for d in (jnp.float32, jnp.bfloat16)}
    scale = np.abs(maps[jnp.float32]).max()
    assert np.abs(maps[jnp.bfloat16] - maps[jnp.float32]).max() <= MAP_TOLERANCE * scale

    top = {}
    for dtype in ("float32", "bfloat16"):
        desc = FeatureEncoder(params, "t", batch_size=32, dtype=dtype)(windows) / PATCH
        scores = desc @ desc.T
        np.fill_diagonal(scores, -np.inf)  # a photo is not its own neighbour
        top[dtype] = np.argsort(-scores, axis=1)[:, :10]
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(top["float32"], top["bfloat16"], strict=True)]
    )
    assert recall >= 0.98, recall
