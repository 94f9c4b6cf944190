"""TiefVision's learned heads, written as convolutions over the encoder's feature map.

A 224x224 window maps to an 11x11x256 patch of the encoder map (stride 16), so an 11x11 VALID
convolution is the same thing as a fully connected layer over one window. Applied to the map of a
whole photo, ``(B, h, w, 256)`` gives ``(B, h-10, w-10, C)``: one output per window, all windows
from one encoder pass (OverFeat). Only the ranking net is not slid: it embeds a whole map.

- :class:`CropClassifier`: foreground/background logits (``[..., 1]`` = foreground). Real logits
  trained with softmax cross-entropy (the original put a sigmoid before its softmax loss).
- :class:`BoxRegressors`: four independent regressors, one per box coordinate (left, top, right,
  bottom deltas in crop pixels, standardised with the training mean/std).
- :class:`RankingNet`: the Deep-Ranking projection: a 1x1 convolution initialised to the
  identity on the per-location L2-normalised map, flattened and L2-normalised, so the untrained
  net *is* the unsupervised descriptor and similarity is a dot product in ``[-1, 1]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tiefjax.nets.alexnet import FEATURE_CHANNELS, PATCH

_EPS = 1e-12

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu}


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; use one of {sorted(_ACTIVATIONS)}"
        ) from None


def normalize_locations(fmap: jax.Array) -> jax.Array:
    """L2-normalise every location's channel vector (all-zero locations stay zero)."""
    fmap = fmap.astype(jnp.promote_types(fmap.dtype, jnp.float32))
    sq = jnp.sum(fmap * fmap, axis=-1, keepdims=True)
    return fmap * jax.lax.rsqrt(jnp.maximum(sq, _EPS * _EPS))


def unsupervised_descriptor(fmap: jax.Array) -> jax.Array:
    """``(B, 11, 11, C)`` -> ``(B, 121*C)``: flattened per-location-normalised map divided by 11.

    Unit norm (when no location is all-zero); the dot product of two descriptors is the
    original's unsupervised score, the mean cosine of spatially aligned locations.
    """
    b = fmap.shape[0]
    n = fmap.shape[1] * fmap.shape[2]
    return normalize_locations(fmap).reshape(b, -1) / jnp.sqrt(jnp.float32(n))


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """``x / ||x||`` along ``axis`` (zero vectors stay zero)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, _EPS * _EPS))


class WindowConv(nn.Module):
    """11x11 VALID convolution (param ``kernel`` HWIO, ``bias``) = a dense layer per window.

    On exactly one window (an 11x11 map, the training case) it runs as one matrix product —
    much faster on CPU than XLA's convolution of the same shape; on larger maps it slides.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (PATCH, PATCH, cin, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if x.shape[-3:-1] == (PATCH, PATCH):
            y = x.reshape(*x.shape[:-3], -1) @ kernel.reshape(-1, self.features)
            y = y.reshape(*x.shape[:-3], 1, 1, self.features)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + bias.astype(self.dtype)


class CropClassifier(nn.Module):
    """``(B, h, w, 256)`` -> ``(B, h-10, w-10, 2)`` logits; softmax ``[..., 1]`` = P(foreground).

    conv 11x11 VALID -> ``hidden`` -> ReLU -> 1x1 -> ``hidden2`` -> ReLU -> 1x1 -> 2
    (the original: 1024 and 256 on a 384-channel map).
    """

    hidden: int = 512
    hidden2: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, fmap: jax.Array) -> jax.Array:
        x = fmap.astype(self.dtype)
        x = WindowConv(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = nn.relu(x)
        x = nn.Conv(self.hidden2, (1, 1), dtype=self.dtype, name="fc2")(x)
        x = nn.relu(x)
        return nn.Conv(2, (1, 1), dtype=self.dtype, name="logits")(x).astype(jnp.float32)


class BoxRegressors(nn.Module):
    """``(B, h, w, 256)`` -> ``(B, h-10, w-10, 4)`` standardised (left, top, right, bottom) deltas.

    Four independent nets as in the original (conv 11x11 -> ``hidden`` -> act -> 1x1 ->
    ``hidden2`` -> act -> 1x1 -> 1), computed together: the first layers of the four nets are one
    convolution with ``4*hidden`` outputs and the later 1x1 layers are grouped (4 groups,
    flax's grouped-conv layout), so net ``i`` only ever sees its own units — the same function and
    gradients as four separate nets, in three large matrix products instead of twelve small ones.
    """

    hidden: int = 512
    hidden2: int = 128
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, fmap: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        x = fmap.astype(self.dtype)
        x = WindowConv(4 * self.hidden, dtype=self.dtype, name="fc1")(x)
        x = act(x)
        x = GroupedPointwise(4, 4 * self.hidden2, dtype=self.dtype, name="fc2")(x)
        x = act(x)
        x = GroupedPointwise(4, 4, dtype=self.dtype, name="out")(x)
        return x.astype(jnp.float32)


class GroupedPointwise(nn.Module):
    """A 1x1 convolution with ``groups`` independent groups (flax's grouped-conv param layout:
    ``kernel`` ``(1, 1, in/groups, features)``), computed as one batched matrix product."""

    groups: int
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        g = self.groups
        cin = x.shape[-1] // g
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        k = kernel.astype(self.dtype).reshape(cin, g, self.features // g)
        xg = x.astype(self.dtype).reshape(*x.shape[:-1], g, cin)
        y = jnp.einsum("...gi,igk->...gk", xg, k).reshape(*x.shape[:-1], self.features)
        return y + bias.astype(self.dtype)


def _identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    del key
    kh, kw, cin, cout = shape
    assert kh == kw == 1 and cin == cout, shape
    return jnp.eye(cin, dtype=dtype).reshape(shape)


class RankingNet(nn.Module):
    """``(B, h, w, C)`` -> ``(B, h*w*C)`` unit-norm embedding; similarity = dot product.

    1x1 convolution (identity init, zero bias) on :func:`normalize_locations` of the map,
    flattened and L2-normalised. Untrained it equals :func:`unsupervised_descriptor` (exactly
    when no location is all-zero, otherwise up to a positive factor).
    """

    channels: int = FEATURE_CHANNELS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, fmap: jax.Array) -> jax.Array:
        x = normalize_locations(fmap).astype(self.dtype)
        x = nn.Conv(
            self.channels,
            (1, 1),
            kernel_init=_identity_init,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="projection",
        )(x)
        x = x.astype(jnp.float32).reshape(x.shape[0], -1)
        return l2_normalize(x)
