"""Several processes on one machine: 2 processes x 2 forced CPU devices (gloo collectives) give
what 1 process x 1 device gives, for `tiefjax train`, `index` and `score`; a process that never
joins or dies mid-run ends the others with one line within the configured timeout.

These are the README's multi-host commands, run as the README shows them (JAX's coordinator
variables), on 127.0.0.1 with a free port per run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _prepared import prepared_workspace

from tiefjax.workspace import Workspace

TIMEOUT_S = 20  # TIEFJAX_DISTRIBUTED_TIMEOUT of these runs


def _settings(steps: int = 6, every: int = 3) -> str:
    """tiefjax.toml of these runs: small heads, ``steps`` steps, eval/checkpoint ``every``."""
    train = (
        f"steps = {steps}\nbatch_size = 8\nwarmup_steps = 2\neval_every = {every}\n"
        f"log_every = {every}\ncheckpoint_every = {every}\nnum_threads = 1\n"
    )
    return (
        f"[train.classifier]\n{train}hidden = 32\nhidden2 = 16\n\n[train.ranking]\n{train}\n"
        "[index]\nbatch_size = 4\ndim = 32\nrecall_sample = 50\n"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(devices: int, process: int | None = None, processes: int = 1, port: int = 0) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TIEFJAX_DISTRIBUTED_TIMEOUT=str(TIMEOUT_S))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    if process is not None:
        env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
        env["JAX_NUM_PROCESSES"] = str(processes)
        env["JAX_PROCESS_ID"] = str(process)
    return env


def _start(args: list[str], processes: int, devices: int, only: list[int] | None = None):
    """``tiefjax ARGS`` as process i of ``processes`` (every one, or ``only`` these)."""
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tiefjax", *args],
            env=_env(devices, i, processes, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (only if only is not None else range(processes))
    ]


def _wait(procs, timeout: float = 300) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        out.append((proc.returncode, stdout, stderr))
    return out


def _ok(results) -> None:
    for rc, stdout, stderr in results:
        assert rc == 0, stderr[-3000:] + stdout[-1000:]


def _single(args: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tiefjax", *args],
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    ws = prepared_workspace(tmp_path_factory.mktemp("multi"))
    ws.config_path.write_text(_settings(), encoding="utf-8")
    return ws.root


def _copy(prepared: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / name, symlinks=True))


def _trained(root: Path, task: str) -> dict[str, np.ndarray]:
    import jax

    from tiefjax.train.artifacts import load_trained

    trained = load_trained(Workspace(root), task)
    assert trained is not None
    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_leaves_with_path(trained.params)
    }


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classifier", "ranking"])
def test_train_on_two_processes_equals_one_process(prepared, tmp_path, task):
    one, two = _copy(prepared, tmp_path, "one"), _copy(prepared, tmp_path, "two")
    _single(["train", str(one), task])
    results = _wait(_start(["train", str(two), task], processes=2, devices=2))
    _ok(results)
    for i, (_, _, stderr) in enumerate(results):
        assert f"process {i} of 2, 2 local cpu device(s) of 4" in stderr
    assert f"{task}: step 6" in results[0][1]
    _assert_same_params(_trained(one, task), _trained(two, task))
    # the feature cache was encoded in two parts and merged into one folder
    caches = [p.name for p in (two / "cache" / "features").iterdir()]
    assert caches and not [n for n in caches if ".part-" in n or ".tmp" in n], caches


@pytest.mark.slow
def test_a_killed_process_ends_the_other_with_one_line_and_a_restart_resumes(prepared, tmp_path):
    one, two = _copy(prepared, tmp_path, "one"), _copy(prepared, tmp_path, "two")
    for root in (one, two):
        (root / "tiefjax.toml").write_text(_settings(steps=120, every=30), encoding="utf-8")
    _single(["train", str(one), "classifier"])
    procs = _start(["train", str(two), "classifier"], processes=2, devices=2)
    checkpoints = two / "train" / "classifier" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        if time.monotonic() > deadline or procs[0].poll() is not None:
            for proc in procs:
                proc.kill()
            pytest.fail(f"no checkpoint written: {_wait(procs)[0][2][-3000:]}")
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # kill -9 process 1 mid-run
    killed_at = time.monotonic()
    rc, _, stderr = _wait(procs[:1], timeout=TIMEOUT_S + 60)[0]
    waited = time.monotonic() - killed_at
    procs[1].wait()
    # JAX's heartbeat (rc 1) or, when the kill lands near a barrier, the barrier's own timeout
    assert rc in (1, 2) and waited < TIMEOUT_S + 30, (rc, waited, stderr[-2000:])
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tiefjax train: error: another process "), last
    assert "Check failure" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    results = _wait(_start(["train", str(two), "classifier"], processes=2, devices=2), 900)
    _ok(results)
    assert "resuming from the checkpoint at step" in results[0][2]
    _assert_same_params(_trained(one, "classifier"), _trained(two, "classifier"))


@pytest.mark.slow
def test_index_and_score_on_two_processes_equal_one_process(prepared, tmp_path):
    from tiefjax.index.row_table import RowTable
    from tiefjax.search import Searcher

    one, two = _copy(prepared, tmp_path, "one"), _copy(prepared, tmp_path, "two")
    _single(["index", str(one)])
    _ok(_wait(_start(["index", str(two)], processes=2, devices=2)))
    builds = []
    for root in (one, two):
        current = (root / "index" / "CURRENT").read_text().strip()
        assert [p.name for p in (root / "index").iterdir() if p.name.startswith(".tmp")] == []
        builds.append(root / "index" / current)
    assert [p.name for p in builds[1].iterdir() if p.name.startswith("part-")] == []
    ids = [list(RowTable.open(b).ids) for b in builds]
    assert ids[0] == ids[1] and len(ids[0]) == 8
    for name in ("features.npy", "unsupervised/vectors.npy"):
        a, b = (np.load(build / name).astype(np.float32) for build in builds)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)
    hits = [Searcher.load(root).neighbours(ids[0][0], k=5) for root in (one, two)]
    assert [h.id for h in hits[0]] == [h.id for h in hits[1]]
    a, b = (np.load(build / "unsupervised" / "neighbours.npy") for build in builds)
    np.testing.assert_array_equal(a["id"], b["id"])

    photos = sorted((prepared.parent / "demo" / "images").iterdir())[:5]
    queries = tmp_path / "queries"
    queries.mkdir()
    for p in photos:
        shutil.copy(p, queries / f"q-{p.name}")
    _single(["score", str(one), str(queries), "--out", str(tmp_path / "one.jsonl")])
    out = tmp_path / "two.jsonl"
    _ok(_wait(_start(["score", str(two), str(queries), "--out", str(out)], 2, 2)))
    assert not list(tmp_path.glob("two.jsonl.part-*"))
    records = [
        sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["id"])
        for path in (tmp_path / "one.jsonl", out)
    ]
    assert len(records[0]) == 5
    for a, b in zip(*records, strict=True):
        assert a["id"] == b["id"] and a["box"] == b["box"]
        assert [h["id"] for h in a["unsupervised"]] == [h["id"] for h in b["unsupervised"]]
        np.testing.assert_allclose(
            [h["score"] for h in a["unsupervised"]],
            [h["score"] for h in b["unsupervised"]],
            atol=1e-5,
        )


def test_a_process_that_never_joins_ends_the_other_with_one_line(prepared, tmp_path):
    started = time.monotonic()
    rc, _, stderr = _wait(_start(["index", str(prepared)], 2, 2, only=[0]), TIMEOUT_S + 90)[0]
    assert rc == 1 and time.monotonic() - started < TIMEOUT_S + 60
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tiefjax index: error: not every process joined the run within"), last
    assert "Check failure" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def test_processes_with_different_commands_are_refused(prepared, tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tiefjax", "index", str(prepared) + suffix],
            env=_env(1, i, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, suffix in ((0, ""), (1, "/"))
    ]
    for rc, _, stderr in _wait(procs, TIMEOUT_S + 90):
        assert rc == 2 and "started with different command lines" in stderr, stderr[-2000:]
