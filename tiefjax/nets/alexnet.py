"""AlexNet convolutional encoder (torchvision layer sizes), NHWC, last max-pool with stride 1.

TiefVision reduces the stride of the last max-pool from 2 to 1 so that a 224x224 input gives an
11x11 map (instead of 6x6) and every 224x224 window of a larger photo maps to exactly one
11x11 patch of the map (total stride 16). The ImageNet classifier head is kept as an optional
module: its stride-2 pool is the stride-1 pool subsampled by 2, so it runs on our map directly.
"""

from __future__ import annotations

from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

#: (name, features, kernel, stride, padding, max-pool after?) as in torchvision's ``features``.
CONV_LAYERS: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("conv1", 64, 11, 4, 2, True),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, True),
)
#: torchvision ``features.<i>`` index of each conv layer, in the order of :data:`CONV_LAYERS`.
TORCH_FEATURE_INDEX: tuple[int, ...] = (0, 3, 6, 8, 10)
FEATURE_CHANNELS = 256
WINDOW = 224  # input window that maps to one 11x11 patch of the feature map
STRIDE = 16  # pixels between neighbouring feature-map cells / window origins
PATCH = 11  # feature-map cells covered by one 224x224 window


def feature_size(n: int) -> int:
    """Feature-map length along one axis for ``n`` input pixels (``n >= 224`` gives ``>= 11``)."""
    a = (n + 2 * 2 - 11) // 4 + 1  # conv1
    b = (a - 3) // 2 + 1  # pool1
    c = (b - 3) // 2 + 1  # conv2 keeps size, pool2
    return c - 2  # conv3..5 keep size, last pool stride 1


def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max-pool, VALID padding, as a max of strided slices (rows, then columns).

    Equal to ``nn.max_pool`` bit for bit (a max is exact), but XLA fuses the slices with the
    ReLU before them instead of running a separate ``reduce_window``, which on the CPU took
    the whole encoder from 129 to 120 ms per batch of 32 on the 2-core development EPYC.
    """
    h = (x.shape[1] - 3) // stride + 1
    w = (x.shape[2] - 3) // stride + 1
    rows = [x[:, i : i + (h - 1) * stride + 1 : stride] for i in range(3)]
    x = jnp.maximum(jnp.maximum(rows[0], rows[1]), rows[2])
    cols = [x[:, :, j : j + (w - 1) * stride + 1 : stride] for j in range(3)]
    return jnp.maximum(jnp.maximum(cols[0], cols[1]), cols[2])


class AlexNetEncoder(nn.Module):
    """``(B, H, W, 3)`` normalised RGB -> ``(B, h, w, 256)`` feature map (224 -> 11).

    ``dtype`` is the compute dtype (bfloat16 on GPUs); parameters stay float32.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        for i, (name, feats, kernel, stride, pad, pool) in enumerate(CONV_LAYERS):
            x = nn.Conv(
                feats,
                (kernel, kernel),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=name,
            )(x)
            x = nn.relu(x)
            if pool:
                last = i == len(CONV_LAYERS) - 1
                x = max_pool_3x3(x, 1 if last else 2)
        return x


class ImageNetHead(nn.Module):
    """torchvision's ``classifier`` (fc6, fc7, fc8 -> 1000 logits) on a 224x224 encoder map.

    Takes the stride-1 map ``(B, 11, 11, 256)``; subsampling it by 2 gives the 6x6 map of the
    original stride-2 pool. Flattened in torchvision's (C, H, W) order so ported weights apply.
    Dropout is omitted: the head is only used for inference (``tiefjax port --check``).
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        pooled = features[:, ::2, ::2, :]  # (B, 6, 6, 256)
        x = jnp.transpose(pooled, (0, 3, 1, 2)).reshape(pooled.shape[0], -1).astype(self.dtype)
        x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc6")(x))
        x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc7")(x))
        return nn.Dense(1000, dtype=self.dtype, name="fc8")(x)


def init_encoder_params(seed: int = 0) -> dict:
    """Seeded random encoder parameters (used when no ImageNet weights were ported)."""
    dummy = jnp.zeros((1, WINDOW, WINDOW, 3), jnp.float32)
    return AlexNetEncoder().init(jax.random.PRNGKey(seed), dummy)["params"]


def apply_params(module: nn.Module, params: Any, *inputs: jax.Array) -> jax.Array:
    """``module.apply({"params": params}, *inputs)``: the module's output array.

    flax types ``Module.apply`` as "output, or ``(output, mutated variables)`` when ``mutable``
    is set"; without ``mutable`` it is always just the output.
    """
    return cast(jax.Array, module.apply({"params": params}, *inputs))
