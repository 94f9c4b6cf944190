"""Frozen-encoder feature cache: encoded once, content-addressed, reused across sets."""

from __future__ import annotations

import numpy as np
import pytest

from tiefjax.train.features import FeatureSource, cached_features


class Images:
    def __init__(self, n: int, seed: int, **extra):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)
        self.extra = extra

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "image_id": f"p{i}",
            **{k: v[i] for k, v in self.extra.items()},
        }


class Counting:
    """A fake encoder: (B, 8, 8, 3) uint8 -> (B, 2, 2, 3) float, counting images encoded."""

    def __init__(self):
        self.seen = 0

    def __call__(self, params, batch):
        self.seen += len(batch)
        return batch.reshape(len(batch), 2, 4, 2, 4, 3).mean((2, 4)).astype(np.float32) * params


def test_cache_encodes_once_and_reuses(tmp_path):
    src = Images(10, 0, label=np.arange(10) % 2)
    enc = Counting()
    a = cached_features(
        src, 1.0, cache_root=tmp_path, name="cls-train", fingerprint="x", encode=enc
    )
    assert isinstance(a, FeatureSource) and len(a) == 10
    assert enc.seen == 10
    ex = a[3]
    np.testing.assert_allclose(ex["image"], enc(1.0, src.images[3:4])[0], rtol=1e-3)
    assert ex["label"] == 1 and "image_id" not in ex
    enc.seen = 0
    b = cached_features(
        src, 1.0, cache_root=tmp_path, name="cls-train", fingerprint="x", encode=enc
    )
    assert enc.seen == 0 and len(b) == 10
    # other data: a new folder, the old one of the same name is removed
    cached_features(
        Images(4, 1), 1.0, cache_root=tmp_path, name="cls-train", fingerprint="y", encode=enc
    )
    assert len(list(tmp_path.glob("cls-train-*"))) == 1
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_identical_images_are_encoded_once_across_sets(tmp_path):
    src = Images(6, 0)
    enc = Counting()
    cached_features(
        src, 1.0, cache_root=tmp_path, name="classification-train", fingerprint="a", encode=enc
    )
    assert enc.seen == 6
    enc.seen = 0

    class Subset:  # the regression set: some of the same crops with targets
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": src.images[2 * i], "target": np.full(4, i, np.float32)}

    reg = cached_features(
        Subset(), 1.0, cache_root=tmp_path, name="regression-train", fingerprint="a", encode=enc
    )
    assert enc.seen == 0  # all reused from the classification cache
    np.testing.assert_allclose(reg[1]["image"], enc(1.0, src.images[2:3])[0], rtol=1e-3)
    # a different encoder never reuses features of another
    enc.seen = 0
    cached_features(
        Subset(), 2.0, cache_root=tmp_path, name="regression-train", fingerprint="a", encode=enc
    )
    assert enc.seen == 3


def test_triplets_share_rows_and_mirror(tmp_path):
    imgs = Images(4, 0).images

    class Triplets:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            r, p, n = [(0, 1, 2), (0, 2, 3), (1, 0, 3)][i]
            return {
                "reference": imgs[r],
                "positive": imgs[p],
                "negative": imgs[n],
                "reference_id": str(r),
            }

    enc = Counting()
    src = cached_features(
        Triplets(),
        1.0,
        cache_root=tmp_path,
        name="t",
        fingerprint="a",
        encode=enc,
        mirror_triplets=True,
    )
    assert enc.seen == 4 + 2  # four photos + the mirrors of the two distinct references
    assert len(src) == 6
    ex, mirror = src[0], src[3]
    np.testing.assert_array_equal(mirror["reference"], ex["reference"])
    np.testing.assert_allclose(mirror["positive"], enc(1.0, imgs[0:1, :, ::-1])[0], rtol=1e-3)


def test_features_are_written_as_computed_and_read_memory_mapped(tmp_path):
    """Each batch is on disk before the next is encoded (nothing held in memory until the
    end), and training reads the cache memory-mapped."""
    src = Images(100, 0)
    sizes: list[int] = []

    def encode(params, batch):
        # the temporary folder's features file, as the encoder is asked for the next batch
        sizes.append(sum(p.stat().st_size for p in tmp_path.glob(".*.tmp-*/features.npy")))
        return Counting()(params, batch)

    feats = cached_features(src, 1.0, cache_root=tmp_path, name="c", fingerprint="a", encode=encode)
    row_bytes = 2 * 2 * 3 * 2  # (2, 2, 3) float16
    assert len(sizes) == 4  # batches of 32, 32, 32, 4
    assert [s - 4096 for s in sizes[1:]] == [32 * row_bytes, 64 * row_bytes, 96 * row_bytes]
    assert isinstance(feats.features, np.memmap) and feats.features.shape == (100, 2, 2, 3)
    np.testing.assert_allclose(feats[99]["image"], Counting()(1.0, src.images[99:])[0], rtol=1e-3)


def test_a_killed_encode_leaves_nothing_read_and_is_cleaned_up(tmp_path):
    src = Images(40, 0)

    def dies(params, batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(src, 1.0, cache_root=tmp_path, name="c", fingerprint="a", encode=dies)
    assert not list(tmp_path.iterdir())  # its temporary folder went with it
    # a kill -9 leaves its temporary folder: never read, removed by the next complete encode
    (tmp_path / ".c-0123456789abcdef.tmp-99999").mkdir()
    enc = Counting()
    cached_features(src, 1.0, cache_root=tmp_path, name="c", fingerprint="a", encode=enc)
    assert enc.seen == 40 and [p.name[:2] for p in tmp_path.iterdir()] == ["c-"]


def test_parts_of_two_processes_merge_into_the_one_process_cache(tmp_path, monkeypatch):
    """Process 1 encodes its half, process 0 its half and merges (run here one after the other):
    the same files as one process writes, mirrored triplets included."""
    import tiefjax.train.features as features_module

    imgs = Images(6, 0).images

    class Triplets:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            r, p, n = [(0, 1, 2), (0, 2, 3), (1, 0, 3), (4, 5, 0), (5, 4, 1)][i]
            return {"reference": imgs[r], "positive": imgs[p], "negative": imgs[n]}

    class Waits(Exception):
        """Process 1 reached the barrier where it waits for process 0's merge."""

    def barrier(name):
        if name.endswith("-ready") and features_module.distributed.process_index() == 1:
            raise Waits

    def run(root, count, me):
        monkeypatch.setattr(features_module.distributed, "process_count", lambda: count)
        monkeypatch.setattr(features_module.distributed, "process_index", lambda: me)
        monkeypatch.setattr(features_module.distributed, "barrier", barrier)
        return cached_features(
            Triplets(), 1.0, cache_root=root, name="t", fingerprint="a",
            encode=Counting(), mirror_triplets=True,
        )  # fmt: skip

    one = run(tmp_path / "one", 1, 0)
    with pytest.raises(Waits):
        run(tmp_path / "two", 2, 1)
    two = run(tmp_path / "two", 2, 0)
    assert isinstance(two.features, np.memmap) and len(two) == len(one) == 10
    for i in range(len(one)):
        for k, v in one[i].items():
            np.testing.assert_array_equal(two[i][k], v, err_msg=f"{i} {k}")
    assert [p.name[:2] for p in (tmp_path / "two").iterdir()] == ["t-"]  # parts removed
