"""Encode windows, locate photos and project rankings on this process's devices (subprocess).

usage: python tests/_devices_script.py OUT.npz   (XLA_FLAGS sets the forced CPU device count)
Writes the encoder features, locator score maps and located boxes; prints the device count.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from PIL import Image

from tiefjax.index.encode import FeatureEncoder
from tiefjax.locate import Locator
from tiefjax.nets.alexnet import PATCH, init_encoder_params
from tiefjax.nets.heads import BoxRegressors, CropClassifier


def main() -> None:
    rng = np.random.default_rng(0)
    params = init_encoder_params(0)
    windows = rng.integers(0, 256, (7, 224, 224, 3), np.uint8)  # 7: not a multiple of 4
    features = FeatureEncoder(params, "t", batch_size=8)(windows)
    fmap = jax.numpy.zeros((1, PATCH, PATCH, 256))
    clf, reg = CropClassifier(hidden=16, hidden2=8), BoxRegressors(hidden=8, hidden2=4)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    locator = Locator(
        params,
        (clf, clf.init(k1, fmap)["params"]),
        (reg, reg.init(k2, fmap)["params"]),
        np.zeros(4, np.float32),
        np.ones(4, np.float32) * 50,
    )
    photos = [
        Image.fromarray(rng.integers(0, 256, (250 + 9 * i, 300, 3), np.uint8)) for i in range(5)
    ]
    probability, deltas = locator.score_maps(
        np.stack([np.asarray(photos[0].resize((288, 256)))] * 3)
    )
    boxes = np.array([found.box for found in locator.locate_many(photos)])
    np.savez(sys.argv[1], features=features, probability=probability, deltas=deltas, boxes=boxes)
    print(json.dumps({"devices": jax.local_device_count()}))


if __name__ == "__main__":
    main()
