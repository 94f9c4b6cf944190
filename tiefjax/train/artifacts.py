"""Train a task on a workspace's prepared data and keep the result where everything finds it.

``train(ws, task)`` is what ``tiefjax train`` and the demo call: it reads the prepared splits,
encodes them once with the frozen encoder (cached), runs the shared loop in
``ws.train_dir(task)`` (resuming an interrupted run) and saves the final head params as a small
orbax checkpoint ``final-<step>-<id>/`` named by ``final.json`` (written last, atomically).
``load_trained(ws, task)`` reads them back for box extraction and search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from tiefjax import distributed
from tiefjax.errors import InvalidInput, NotFound
from tiefjax.index.config import IndexConfig
from tiefjax.models import compute_dtype, load_encoder, on_device
from tiefjax.nets.alexnet import FEATURE_CHANNELS, PATCH, init_encoder_params
from tiefjax.settings import with_overrides
from tiefjax.train.features import params_fingerprint, split_features
from tiefjax.train.loop import run_loop
from tiefjax.train.tasks import (
    CONFIGS,
    DATASETS,
    RankingConfig,
    TrainConfig,
    check_task,
    head_module,
    make_task,
)
from tiefjax.workspace import Workspace, atomic_write_text

FINAL_NAME = "final.json"


@dataclass(frozen=True)
class Trained:
    """A trained head: its params, the fine-tuned encoder's (None when it stayed frozen) and
    ``meta`` (task, step, sizes, metrics; ``mean``/``std`` of the regression targets)."""

    params: Any
    encoder_params: Any | None
    meta: dict[str, Any]

    @property
    def head(self) -> Any:
        """The flax module: ``trained.head.apply({"params": trained.params}, feature_map)``."""
        return head_module(self.meta["task"], self.meta)


@dataclass(frozen=True)
class TrainReport:
    task: str
    step: int
    metrics: dict[str, float]  # test split, last step
    baseline: dict[str, float]  # test split, untrained (ranking: the unsupervised descriptor)
    primary: str  # the headline metric name
    seconds: float  # whole call, feature encoding included
    encode_seconds: float  # encoding (0 when cached or fine-tuning)
    steps_per_second: float
    resumed_from: int
    train_examples: int
    test_examples: int
    encoder_source: str
    finetune_encoder: bool
    train_dir: Path

    def summary(self) -> str:
        """A few lines for people."""
        fmt = lambda m: ", ".join(  # noqa: E731
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()
        )
        lines = [
            f"{self.task}: step {self.step}, {self.train_examples} train / {self.test_examples} "
            f"test examples, encoder {self.encoder_source}"
            f"{' (fine-tuned)' if self.finetune_encoder else ' (frozen)'}, {self.seconds:.1f}s"
            f" ({self.encode_seconds:.1f}s encoding, {self.steps_per_second:.1f} steps/s)",
            f"  test:     {fmt(self.metrics)}",
            f"  untrained: {fmt(self.baseline)}",
        ]
        return "\n".join(lines)


def config_for(ws: Workspace, task: str, config: TrainConfig | None = None, **overrides: Any):
    """The task's settings: ``config`` or ``[train.<task>]`` of the workspace, then overrides
    (``None`` values are ignored)."""
    cls = CONFIGS[check_task(task)]
    cfg = config if config is not None else ws.section(f"train.{task}", cls)
    return with_overrides(cfg, "training", **overrides)


def _splits(ws: Workspace, dataset: str):
    from tiefjax.prepare import load_split

    train_src = load_split(ws, dataset, "train")
    test_src = load_split(ws, dataset, "test")
    if len(train_src) == 0:
        raise NotFound(
            f"the prepared {dataset} training split is empty; annotate boxes/triplets and run "
            f"`tiefjax prepare {ws.root}`"
        )
    return train_src, test_src


def train(
    ws: Workspace,
    task: str,
    config: TrainConfig | None = None,
    *,
    reset: bool = False,
    progress: bool | None = None,
    **overrides: Any,
) -> TrainReport:
    """Train ``task`` (classifier | regressor | ranking) on ``ws``; resumes an interrupted run.

    ``reset`` discards earlier checkpoints of this task first. ``overrides`` replace settings,
    e.g. ``steps=100, batch_size=32, finetune_encoder=True``.
    """
    distributed.start()  # a multi-process script joins before anything touches JAX
    t0 = time.perf_counter()
    ws.require()
    cfg = config_for(ws, task, config, **overrides)
    dataset = DATASETS[task]
    train_dir = ws.train_dir(task)
    if reset:
        shutil.rmtree(train_dir, ignore_errors=True)

    encoder = load_encoder(ws)
    dtype = compute_dtype(ws)
    train_src, test_src = _splits(ws, dataset)
    encode_seconds = 0.0
    mirror = isinstance(cfg, RankingConfig) and cfg.mirror_triplets
    # the ranking net is trained on the maps the index will give it ([index] mirror)
    invariant = task == "ranking" and ws.section("index", IndexConfig).mirror
    if not cfg.finetune_encoder:
        t_enc = time.perf_counter()
        train_src = split_features(
            ws,
            dataset,
            "train",
            train_src,
            encoder.params,
            mirror_triplets=mirror,
            mirror_invariant=invariant,
            dtype=dtype,
        )
        if len(test_src):
            test_src = split_features(
                ws,
                dataset,
                "test",
                test_src,
                encoder.params,
                mirror_invariant=invariant,
                dtype=dtype,
            )
        encode_seconds = time.perf_counter() - t_enc
    elif mirror:
        print("tiefjax train: mirror_triplets applies to the frozen encoder only", file=sys.stderr)

    stats = None
    if task == "regressor":
        from tiefjax.prepare import regression_stats

        mean, std = regression_stats(ws)
        stats = (np.asarray(mean, np.float32), np.asarray(std, np.float32))
    enc_params = encoder.params if cfg.finetune_encoder else None
    the_task = make_task(task, cfg, encoder_params=enc_params, regression_stats=stats)

    enc_fp = params_fingerprint(encoder.params)
    ident = {
        "task": task,
        "config": cfg.identity(),
        "encoder": enc_fp,
        "mirror_invariant": invariant,
        "train": getattr(train_src, "fingerprint", None) or _src_fp(train_src),
        "test": getattr(test_src, "fingerprint", None) or _src_fp(test_src),
    }
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    run_id = run_id[:16]
    distributed.check_same("settings, data or encoder", run_id)
    result = run_loop(
        the_task, train_src, test_src, cfg, train_dir, run_id=run_id, progress=progress
    )
    meta = {
        "task": task,
        "step": result.step,
        "run_id": run_id,
        "finetune_encoder": cfg.finetune_encoder,
        "encoder_source": encoder.source,
        "encoder_fingerprint": enc_fp,
        "metrics": result.metrics,
        "baseline": result.baseline,
        "config": dataclasses.asdict(cfg),
        **the_task.meta,
    }
    save_final(train_dir, result.params, meta)
    return TrainReport(
        task=task,
        step=result.step,
        metrics=result.metrics,
        baseline=result.baseline,
        primary=the_task.primary,
        seconds=time.perf_counter() - t0,
        encode_seconds=encode_seconds,
        steps_per_second=result.steps_per_second,
        resumed_from=result.resumed_from,
        train_examples=len(train_src),
        test_examples=len(test_src),
        encoder_source=encoder.source,
        finetune_encoder=cfg.finetune_encoder,
        train_dir=train_dir,
    )


def _src_fp(src: Any) -> str:
    """Identity of a feature source: the cache folder it was memory-mapped from."""
    feats = getattr(src, "features", None)
    name = getattr(feats, "filename", None)
    return f"{name}:{len(src)}" if name else f"len:{len(src)}"


def save_final(train_dir: Path, params: Any, meta: dict[str, Any]) -> None:
    """Head (+ fine-tuned encoder) params as their own small checkpoint, then ``final.json``."""
    current = read_final(train_dir)
    if current and current.get("run_id") == meta["run_id"] and current.get("step") == meta["step"]:
        if (train_dir / current["dir"]).is_dir():
            return
    if jax.process_index() == 0:
        for stale in train_dir.glob("final-*"):  # leftovers of an interrupted save
            if not current or stale.name != current.get("dir"):
                shutil.rmtree(stale, ignore_errors=True)
    # every process saves (orbax writes cooperatively) into the folder process 0 names
    name = distributed.share(
        f"final-{train_dir.name}", f"final-{meta['step']}-{uuid.uuid4().hex[:8]}"
    )
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save((train_dir / name).absolute(), params)
    if jax.process_index() == 0:
        atomic_write_text(train_dir / FINAL_NAME, json.dumps({**meta, "dir": name}, indent=1))
        if current and current.get("dir") != name:
            shutil.rmtree(train_dir / current["dir"], ignore_errors=True)
    distributed.barrier(f"final-{train_dir.name}-written")


def read_final(train_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((train_dir / FINAL_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_trained(ws: Workspace, task: str) -> Trained | None:
    """The last trained params of ``task``, or None when it was never trained."""
    check_task(task)
    train_dir = ws.train_dir(task)
    meta = read_final(train_dir)
    if meta is None or not (train_dir / meta.get("dir", "")).is_dir():
        return None
    head = head_module(task, meta)
    channels = meta.get("channels", FEATURE_CHANNELS) if task == "ranking" else FEATURE_CHANNELS
    dummy = jax.ShapeDtypeStruct((1, PATCH, PATCH, channels), np.float32)
    target: dict[str, Any] = {
        "head": jax.eval_shape(lambda x: head.init(jax.random.PRNGKey(0), x), dummy)["params"]
    }
    if meta.get("finetune_encoder"):
        target["encoder"] = jax.eval_shape(lambda: init_encoder_params(0))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore((train_dir / meta["dir"]).absolute(), on_device(target))
    except Exception as err:
        raise InvalidInput(
            f"the trained {task} in {train_dir} could not be read "
            f"({err.__class__.__name__}: {str(err)[:200]}); retrain with "
            f"`tiefjax train {ws.root} {task} --reset`"
        ) from err
    return Trained(params["head"], params.get("encoder"), meta)
