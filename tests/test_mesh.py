"""Data parallelism: 4 forced CPU devices train the same params as 1; clear batch errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiefjax.errors import TiefjaxError
from tiefjax.train.mesh import make_mesh

SCRIPT = Path(__file__).with_name("_train_script.py")


def _run(tmp: Path, name: str, devices: int, batch: int, steps: int = 4) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp / f"{name}.npz"
    args = [str(tmp / name), str(out), str(steps), str(batch), "2", "2", "0"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" not in info:
        assert info["devices"] == devices
        info["params"] = dict(np.load(out))
    return info


def test_four_devices_equal_one_device(tmp_path):
    one = _run(tmp_path, "one", 1, 8)
    four = _run(tmp_path, "four", 4, 8)
    assert one["step"] == four["step"] == 4
    assert one["params"].keys() == four["params"].keys()
    for k in one["params"]:
        np.testing.assert_allclose(
            four["params"][k], one["params"][k], atol=1e-5, rtol=0, err_msg=k
        )


def test_indivisible_batch_is_a_clear_error(tmp_path):
    info = _run(tmp_path, "bad", 4, 6)
    assert (
        "6" in info["error"] and "4 devices" in info["error"] and "multiple of 4" in info["error"]
    )


def test_put_batch_single_device():
    mesh = make_mesh()
    batch = mesh.put_batch({"x": np.arange(8 * 3).reshape(8, 3)}, 8)
    assert batch["x"].shape == (8, 3)
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(24).reshape(8, 3))
    with pytest.raises(TiefjaxError, match="batch size 0"):
        mesh.check_batch_size(0)
