"""One training loop for every task: grain input pipeline, jit'd sharded steps, eval, checkpoints.

- Data order is a pure function of ``(seed, step)``: ``MapDataset.source(src).shuffle(seed)
  .repeat()`` (each epoch reshuffled) batched into per-process batches, so batch ``s`` is always
  the same examples; resuming at step ``s`` slices the dataset at ``s`` and the run continues
  exactly as if it had never stopped.
- ``jax.jit`` with the batch sharded on the mesh's ``data`` axis and state replicated.
- orbax ``CheckpointManager``: every ``checkpoint_every`` steps and at the end, the last
  ``keep_checkpoints`` kept, the latest restored automatically. A checkpoint is written to a
  temporary folder and renamed, so a ``kill -9`` never leaves a half checkpoint that gets read.
- ``metrics.jsonl`` in the run folder (one JSON object per line: ``step``, ``split``
  ``"train"``/``"test"``, metrics) and a tqdm progress bar. Step 0's test line is the untrained
  baseline.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from tiefjax import distributed
from tiefjax.errors import InvalidInput
from tiefjax.train.mesh import DataMesh, make_mesh, to_host
from tiefjax.train.tasks import Task, TrainConfig, optimizer
from tiefjax.workspace import atomic_write_text

METRICS_NAME = "metrics.jsonl"
RUN_NAME = "run.json"
CHECKPOINTS = "checkpoints"


class Source(Protocol):
    """Random-access examples: ``len(src)`` and ``src[i] -> dict`` (tfds/grain data sources too)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


@dataclass
class LoopResult:
    params: Any  # host (numpy) pytree
    step: int
    metrics: dict[str, float]  # test metrics at the last step
    baseline: dict[str, float]  # test metrics at step 0 (untrained)
    resumed_from: int  # 0 = fresh start
    seconds: float  # wall time of this call
    steps_per_second: float  # this call's training steps (0 when nothing was left to do)
    history: list[dict[str, Any]] = field(default_factory=list)


def _select(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], dict[str, np.ndarray]]:
    def select(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [k for k in keys if k not in example]
        if missing:
            raise InvalidInput(f"training examples lack field(s) {missing}; have {sorted(example)}")
        return {k: np.asarray(example[k]) for k in keys}

    return select


def train_batches(
    src: Source, keys: Sequence[str], config: TrainConfig, mesh: DataMesh, start_step: int
) -> grain.IterDataset:
    """This process's batches for steps ``start_step, start_step+1, ...`` (deterministic)."""
    if len(src) == 0:
        raise InvalidInput("the training split is empty; annotate more images and run prepare")
    local = mesh.check_batch_size(config.batch_size)
    ds = (
        grain.MapDataset.source(src)
        .shuffle(seed=config.seed)
        .repeat()
        .map(_select(keys))
        .batch(local, drop_remainder=True)
    )
    ds = ds[mesh.process_index :: mesh.process_count]  # per-process shard of every global batch
    ds = ds[start_step:]
    opts = grain.ReadOptions(num_threads=config.num_threads, prefetch_buffer_size=config.prefetch)
    return ds.to_iter_dataset(opts)


def eval_batches(src: Source, keys: Sequence[str], batch_size: int, mesh: DataMesh):
    """Global batches over the whole split in order, padded at the end; yields (local, n_valid)."""
    local = mesh.check_batch_size(batch_size)
    select = _select(keys)
    first = None
    n = len(src)
    for start in range(0, n, batch_size):
        rows = []
        lo = start + mesh.process_index * local
        for i in range(lo, lo + local):
            if i < n:
                rows.append(select(src[i]))
                first = first or rows[-1]
            else:
                first = first or select(src[0])
                rows.append({k: np.zeros_like(v) for k, v in first.items()})
        yield {k: np.stack([r[k] for r in rows]) for k in keys}, min(batch_size, n - start)


class _MetricsLog:
    """``metrics.jsonl``; on resume, lines past the resumed step (a killed run's) are dropped."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        lines: list[str] = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= keep_until:
                        lines.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
        self.records = [json.loads(line) for line in lines]
        distributed.barrier(f"metrics-{path.parent.name}-read")
        if jax.process_index() == 0:
            atomic_write_text(path, "".join(line + "\n" for line in lines))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if jax.process_index() == 0:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class StepFns:
    """The compiled pieces of a run: ``init() -> state``, ``train_step(state, batch) -> (state,
    metrics)`` (state donated) and ``predict(params, batch)``; state is sharded as
    :meth:`DataMesh.state_sharding` says, batches on the mesh's ``data`` axis. ``abstract_state``
    is the state's shapes, dtypes and shardings (what a checkpoint is restored into)."""

    init: Callable[[], dict[str, Any]]
    train_step: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    predict: Callable[[Any, Any], dict[str, jax.Array]]
    abstract_state: Any


def make_step_fns(task: Task, config: TrainConfig, mesh: DataMesh) -> StepFns:
    """The train step and predict function of ``task`` under ``config``'s optimiser."""
    tx = optimizer(config)
    repl, batch_sh = mesh.replicated, mesh.batch_sharding

    def init() -> dict[str, Any]:
        params = task.init(jax.random.PRNGKey(config.seed))
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    def step_fn(state: dict[str, Any], batch: dict[str, jax.Array]):
        grads, metrics = jax.grad(task.loss, has_aux=True)(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

    shapes = jax.eval_shape(init)
    state_sh = mesh.state_sharding(shapes)
    train_step = jax.jit(
        step_fn,
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, repl),
        donate_argnums=0,
    )
    predict = jax.jit(task.predict, in_shardings=(state_sh["params"], batch_sh), out_shardings=repl)
    init_sharded = jax.jit(init, out_shardings=state_sh)
    abstract = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), shapes, state_sh
    )
    return StepFns(init_sharded, train_step, predict, abstract)


def run_loop(
    task: Task,
    train_src: Source,
    test_src: Source | None,
    config: TrainConfig,
    train_dir: str | Path,
    *,
    mesh: DataMesh | None = None,
    run_id: str = "",
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> LoopResult:
    """Train ``task`` to ``config.steps`` steps, resuming from ``train_dir`` when it can.

    ``run_id`` names what is being trained (settings, data, encoder); checkpoints of a different
    ``run_id`` in ``train_dir`` are discarded rather than resumed.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    mesh = mesh or make_mesh()
    mesh.check_batch_size(config.batch_size)
    if config.steps < 1:
        raise InvalidInput("steps must be at least 1")
    train_dir = Path(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    _check_run(train_dir, run_id, log)

    fns = make_step_fns(task, config, mesh)
    train_step, predict = fns.train_step, fns.predict

    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False
    )
    with ocp.CheckpointManager((train_dir / CHECKPOINTS).absolute(), options=options) as mngr:
        restored = _restore_newest_intact(mngr, fns.abstract_state, task.name, log)
        if restored is not None:
            state: dict[str, Any] = restored
            start = int(to_host(state["step"]))
            log(f"{task.name}: resuming from the checkpoint at step {start}")
        else:
            state = fns.init()
            start = 0
        distributed.check_same("checkpoints (resume step)", str(start))
        metrics_log = _MetricsLog(train_dir / METRICS_NAME, keep_until=start)

        def evaluate(step: int) -> dict[str, float]:
            if test_src is None or len(test_src) == 0:
                return {}
            outs: list[dict[str, np.ndarray]] = []
            for local, n_valid in eval_batches(test_src, task.keys, config.batch_size, mesh):
                out = predict(state["params"], mesh.put_batch(local, config.batch_size))
                outs.append({k: to_host(v)[:n_valid] for k, v in out.items()})
            merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
            result = task.evaluate(merged)
            metrics_log.write({"step": step, "split": "test", **result})
            return result

        if start == 0 and not _find(metrics_log.records, 0, "test"):
            evaluate(0)
        last_eval = _find(metrics_log.records, start, "test")
        todo = max(0, config.steps - start)
        t_train = time.perf_counter()
        if todo:
            batches = iter(train_batches(train_src, task.keys, config, mesh, start))
            pending: list[dict[str, jax.Array]] = []
            bar = tqdm(
                total=config.steps,
                initial=start,
                desc=f"train {task.name}",
                disable=(not progress) if progress is not None else None,
                leave=False,
            )
            with bar:
                for step in range(start + 1, config.steps + 1):
                    batch = mesh.put_batch(next(batches), config.batch_size)
                    state, m = train_step(state, batch)
                    pending.append(m)
                    bar.update(1)
                    if step % config.log_every == 0 or step == config.steps:
                        means = {
                            k: float(np.mean([to_host(p[k]) for p in pending])) for k in pending[0]
                        }
                        pending.clear()
                        metrics_log.write({"step": step, "split": "train", **means})
                        bar.set_postfix(loss=f"{means['loss']:.4f}")
                    last_eval = None
                    if step % config.eval_every == 0 or step == config.steps:
                        last_eval = evaluate(step)
                        if task.primary in last_eval:
                            bar.set_postfix(**{task.primary: f"{last_eval[task.primary]:.3f}"})
                    if step % config.checkpoint_every == 0 or step == config.steps:
                        mngr.save(step, args=ocp.args.StandardSave(state), force=True)
                mngr.wait_until_finished()
        elapsed_train = time.perf_counter() - t_train
        if last_eval is None:
            last_eval = evaluate(max(start, config.steps)) if todo == 0 else {}
        params = jax.tree.map(to_host, state["params"])
        final_step = int(to_host(state["step"]))
    baseline = _find(metrics_log.records, 0, "test") or {}
    return LoopResult(
        params=params,
        step=final_step,
        metrics=_strip(last_eval),
        baseline=_strip(baseline),
        resumed_from=start,
        seconds=time.perf_counter() - t0,
        steps_per_second=todo / elapsed_train if todo and elapsed_train > 0 else 0.0,
        history=list(metrics_log.records),
    )


def _restore_newest_intact(
    mngr: ocp.CheckpointManager, target: Any, name: str, log: Callable[[str], None]
) -> Any | None:
    """The newest checkpoint that reads back on every process, or None when there is none.

    A damaged one (a disk error, a file cut short, a process killed while writing its shards)
    is said so and removed, and the one before it is tried: a run falls back to the newest
    intact checkpoint instead of stopping on it. Processes decide together, so that none
    resumes from another step than the others.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state, reason = mngr.restore(step, args=ocp.args.StandardRestore(target)), ""
        except Exception as err:  # orbax/tensorstore raise ValueError, OSError, ...
            state, reason = None, str(err).splitlines()[0][:160] if str(err) else repr(err)
        if distributed.all_true(f"restore-{step}", state is not None):
            return state
        reason = reason or "on another process"
        log(f"{name}: the checkpoint at step {step} is damaged ({reason}); removed it")
        mngr.delete(step)
    return None


def _find(records: list[dict[str, Any]], step: int, split: str) -> dict[str, Any] | None:
    for r in reversed(records):
        if r.get("step") == step and r.get("split") == split:
            return r
    return None


def _strip(record: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: v for k, v in (record or {}).items() if k not in ("step", "split")}


def _check_run(train_dir: Path, run_id: str, log: Callable[[str], None]) -> None:
    """Start afresh (dropping old checkpoints and metrics) when ``run_id`` changed."""
    path = train_dir / RUN_NAME
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        old = None
    if old == run_id:
        return
    distributed.barrier(f"run-{train_dir.name}-checked")  # every process read the old run id
    if jax.process_index() == 0:
        if old is not None and (train_dir / CHECKPOINTS).exists():
            log(f"{train_dir.name}: settings, data or encoder changed; starting a new run")
        shutil.rmtree(train_dir / CHECKPOINTS, ignore_errors=True)
        (train_dir / METRICS_NAME).unlink(missing_ok=True)
        atomic_write_text(path, json.dumps({"run_id": run_id}) + "\n")
    distributed.barrier(f"run-{train_dir.name}-reset")  # nobody reads what is being removed
