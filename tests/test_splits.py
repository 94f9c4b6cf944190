"""Split by image: a pure, stable function of (seed, id, fraction)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiefjax.data.splits import split_of, split_unit
from tiefjax.errors import InvalidInput

ids = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(ids, min_size=1, max_size=50, unique=True), st.integers(0, 2**31), st.floats(0, 1))
def test_every_id_in_exactly_one_split_independent_of_the_others(image_ids, seed, fraction):
    alone = {i: split_of(i, fraction, seed) for i in image_ids}
    together = {}
    for i in reversed(image_ids):  # other order, other company: same answer
        together[i] = split_of(i, fraction, seed)
    assert alone == together
    assert set(alone.values()) <= {"train", "test"}
    train = {i for i, s in alone.items() if s == "train"}
    test = {i for i, s in alone.items() if s == "test"}
    assert not train & test and train | test == set(image_ids)


@settings(max_examples=100, deadline=None)
@given(ids, st.integers(0, 1000), st.floats(0, 1), st.floats(0, 1))
def test_raising_the_fraction_only_moves_images_into_test(image_id, seed, a, b):
    low, high = sorted((a, b))
    if split_of(image_id, low, seed) == "test":
        assert split_of(image_id, high, seed) == "test"


def test_extremes():
    assert all(split_of(f"img{i}", 0.0, 0) == "train" for i in range(100))
    assert all(split_of(f"img{i}", 1.0, 0) == "test" for i in range(100))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5])
def test_fraction_roughly_right(fraction):
    n = 5000
    got = sum(split_of(f"photo-{i:05d}", fraction, 7) == "test" for i in range(n)) / n
    sigma = (fraction * (1 - fraction) / n) ** 0.5
    assert abs(got - fraction) < 5 * sigma


def test_seed_changes_the_split():
    a = [split_of(f"x{i}", 0.5, 0) for i in range(200)]
    b = [split_of(f"x{i}", 0.5, 1) for i in range(200)]
    assert a != b


def test_stable_across_processes():
    """No per-process salt (Python's hash() would be): a fresh interpreter agrees."""
    code = "from tiefjax.data.splits import split_unit; print(repr(split_unit('dress-042', 3)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == split_unit("dress-042", 3)
    # pinned: changing the hash would silently reshuffle every user's train/test split
    assert split_unit("dress-042", 3) == 0.16515171973044043


def test_bad_fraction():
    with pytest.raises(InvalidInput):
        split_of("a", 1.5, 0)
