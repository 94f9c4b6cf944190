"""The one inference path: padding, and 4 forced devices computing what 1 device computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiefjax.inference import ShardedApply, pad_rows, padded_rows, power_of_two_parts

SCRIPT = Path(__file__).with_name("_devices_script.py")


def _on_devices(tmp: Path, devices: int) -> dict[str, np.ndarray]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp / f"{devices}.npz"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["devices"] == devices
    return dict(np.load(out))


def test_locate_and_encode_on_four_devices_equal_one_device(tmp_path):
    one, four = _on_devices(tmp_path, 1), _on_devices(tmp_path, 4)
    assert one["features"].shape == (7, 30976) and one["boxes"].shape == (5, 4)
    for key in ("features", "probability", "deltas", "boxes"):
        scale = max(1.0, float(np.abs(one[key]).max()))
        np.testing.assert_allclose(four[key], one[key], atol=1e-5 * scale, rtol=0, err_msg=key)


def test_padding_and_parts():
    assert power_of_two_parts(13, 16) == [8, 4, 1] and power_of_two_parts(40, 16) == [16, 16, 8]
    assert padded_rows(1, 32, 4) == 4 and padded_rows(17, 32, 4) == 32
    padded = pad_rows(np.ones((3, 2), np.uint8), 8)
    assert padded.shape == (8, 2) and padded[:3].all() and not padded[3:].any()


def test_sharded_apply_drops_padding_and_refuses_oversized_calls():
    doubled = ShardedApply(lambda p, x: x * p, np.float32(2), cap=4)
    np.testing.assert_array_equal(doubled(np.arange(10.0)), np.arange(10.0) * 2)  # 4 + 4 + 2
    with pytest.raises(ValueError, match="1..4 rows"):
        doubled.start(np.arange(5.0))
    with pytest.raises(ValueError, match="empty"):
        doubled(np.zeros((0,)))
