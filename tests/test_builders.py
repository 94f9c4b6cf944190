"""tfds builders without TensorFlow: write, read back, empty splits, the crop spool."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from tiefjax.data import builders
from tiefjax.data.builders import Spool, chunk_by_weight
from tiefjax.data.crops import decode_image, encode_image


def test_write_and_read_back_with_an_empty_split(tmp_path):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(5)]

    def shard(lo, hi):
        for i in range(lo, hi):
            yield (
                str(i),
                {
                    "image": encode_image(pixels[i], "png"),
                    "target": np.arange(4, dtype=np.float32) + i,
                    "image_id": f"img{i}",
                },
            )

    shards = {"train": [lambda: shard(0, 3), lambda: shard(3, 3), lambda: shard(3, 5)]}
    shards["test"] = [lambda: shard(0, 0)]
    folder = builders.write_dataset("regression", tmp_path, shards, "png")
    train = builders.open_split(folder, "train")
    assert len(train) == 5
    for i in range(5):  # shard order and record order are kept
        rec = train[i]
        np.testing.assert_array_equal(rec["image"], pixels[i])
        np.testing.assert_array_equal(rec["target"], np.arange(4) + i)
        assert rec["image_id"] == f"img{i}".encode()
    assert len(builders.open_split(folder, "test")) == 0


def test_no_tensorflow_needed(tmp_path):
    """A fresh interpreter writes and reads a dataset and never imports TensorFlow."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from tiefjax.data import builders
        from tiefjax.data.crops import encode_image
        px = encode_image(np.zeros((224, 224, 3), np.uint8), "jpeg")
        ex = {{"image": px, "label": 1, "image_id": "a"}}
        folder = builders.write_dataset(
            "classification", {str(tmp_path)!r}, {{"train": [lambda: iter([("k", ex)])]}}, "jpeg"
        )
        assert builders.open_split(folder, "train")[0]["label"] == 1
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_spool_round_trip(tmp_path):
    with Spool(tmp_path / "s") as spool:
        a = spool.append([(1, (0.5, 1.0, 2.0, 3.0), b"x" * 10)])
        b = spool.append({"y": b"\0" * 1000})
        assert (a, b, len(spool)) == (0, 1, 2)
        assert spool[1] == {"y": b"\0" * 1000}
        assert spool[0][0][2] == b"x" * 10


def test_chunk_by_weight():
    assert chunk_by_weight([], len, 10) == [[]]
    assert chunk_by_weight(["aaaa", "bbbb", "cc", "ddddddddddddd", "e"], len, 10) == [
        ["aaaa", "bbbb", "cc"],
        ["ddddddddddddd"],
        ["e"],
    ]


def test_decode_matches_tfds_decode(tmp_path):
    px = np.random.default_rng(2).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    data = encode_image(px, "jpeg", 95)
    folder = builders.write_dataset(
        "classification",
        tmp_path,
        {"train": [lambda: iter([("k", {"image": data, "label": 0, "image_id": "z"})])]},
        "jpeg",
    )
    np.testing.assert_array_equal(
        builders.open_split(folder, "train")[0]["image"], decode_image(data)
    )
