"""The loop resumes exactly: kill -9 mid-run + rerun == an uninterrupted run; keep-last-K."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _train_synthetic as syn
import numpy as np

from tiefjax.train.loop import run_loop, train_batches
from tiefjax.train.mesh import make_mesh
from tiefjax.train.tasks import ClassifierConfig, make_task

SCRIPT = Path(__file__).with_name("_train_script.py")
STEPS, BATCH, EVERY, KEEP, SLEEP = 24, 8, 4, 2, 0.01


def _cmd(tmp: Path, name: str) -> list[str]:
    args = [tmp / name, tmp / f"{name}.npz", STEPS, BATCH, EVERY, KEEP, SLEEP]
    return [sys.executable, str(SCRIPT), *map(str, args)]


def _env() -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def _steps(ckpt_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in ckpt_dir.glob("*") if p.name.isdigit())
        if ckpt_dir.exists()
        else []
    )


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full = subprocess.run(
        _cmd(tmp_path, "full"), env=_env(), capture_output=True, text=True, timeout=240
    )
    assert full.returncode == 0, full.stderr[-2000:]

    ckpts = tmp_path / "killed" / "checkpoints"
    proc = subprocess.Popen(
        _cmd(tmp_path, "killed"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(s >= 8 for s in _steps(ckpts)):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = _steps(ckpts)
    assert done and max(done) < STEPS

    again = subprocess.run(
        _cmd(tmp_path, "killed"), env=_env(), capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 0, again.stderr[-2000:]
    info = json.loads(again.stdout.strip().splitlines()[-1])
    assert info["step"] == STEPS and 8 <= info["resumed_from"] < STEPS

    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "killed.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    assert _steps(ckpts) == [STEPS - EVERY, STEPS]  # keep the last K=2
    lines = [
        json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    keys = [(r["step"], r["split"]) for r in lines]
    assert len(keys) == len(set(keys)) and (STEPS, "test") in keys and (0, "test") in keys


def test_data_order_is_a_function_of_seed_and_step():
    src = syn.classification(40, 0)
    cfg = ClassifierConfig.tiny(batch_size=8)
    mesh = make_mesh()
    it = iter(train_batches(src, ("image", "label"), cfg, mesh, 0))
    first = [next(it) for _ in range(7)]  # crosses an epoch boundary (5 batches per epoch)
    later = next(iter(train_batches(src, ("image", "label"), cfg, mesh, 5)))
    np.testing.assert_array_equal(later["image"], first[5]["image"])
    epoch1 = np.concatenate([b["label"] for b in first[:5]])
    assert sorted(epoch1.tolist()) == sorted(src.extras["label"].tolist())  # each example once
    other = next(
        iter(
            train_batches(
                src, ("image", "label"), ClassifierConfig.tiny(batch_size=8, seed=1), mesh, 0
            )
        )
    )
    assert not np.array_equal(other["image"], first[0]["image"])


def test_more_steps_continue_and_changed_settings_restart(tmp_path):
    train, test = syn.classification(64, 0), syn.classification(16, 1)
    cfg = ClassifierConfig.tiny(steps=6, checkpoint_every=3, eval_every=3, log_every=3)
    task = make_task("classifier", cfg, channels=syn.C)
    r1 = run_loop(task, train, test, cfg, tmp_path, run_id="a", progress=False)
    assert r1.step == 6 and r1.resumed_from == 0
    cfg2 = ClassifierConfig.tiny(steps=9, checkpoint_every=3, eval_every=3, log_every=3)
    r2 = run_loop(task, train, test, cfg2, tmp_path, run_id="a", progress=False)
    assert r2.step == 9 and r2.resumed_from == 6 and r2.baseline == r1.baseline
    r3 = run_loop(task, train, test, cfg2, tmp_path, run_id="b", progress=False)
    assert r3.step == 9 and r3.resumed_from == 0


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    train, test = syn.classification(64, 0), syn.classification(16, 1)
    cfg = ClassifierConfig.tiny(
        steps=6, checkpoint_every=3, eval_every=3, log_every=3, keep_checkpoints=2
    )
    task = make_task("classifier", cfg, channels=syn.C)
    run_loop(task, train, test, cfg, tmp_path, run_id="a", progress=False)
    assert _steps(tmp_path / "checkpoints") == [3, 6]
    for f in (tmp_path / "checkpoints" / "6").rglob("*"):
        if f.is_file() and f.stat().st_size > 64 and "metadata" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)  # a disk error: zeros where the data was
    said: list[str] = []
    more = dataclasses.replace(cfg, steps=9)
    r = run_loop(task, train, test, more, tmp_path, run_id="a", progress=False, log=said.append)
    assert r.resumed_from == 3 and r.step == 9, said
    assert any("checkpoint at step 6 is damaged" in line for line in said), said
    assert _steps(tmp_path / "checkpoints") == [6, 9]  # step 6 saved again, intact
