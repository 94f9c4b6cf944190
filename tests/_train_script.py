"""Run the training loop on synthetic data in a subprocess (kill -9 and multi-device tests).

usage: python tests/_train_script.py TRAIN_DIR OUT.npz STEPS BATCH CKPT_EVERY KEEP SLEEP_S
Prints one JSON line: {"step", "resumed_from", "devices"} or {"error": message}.
"""

from __future__ import annotations

import json
import sys
import time

import _train_synthetic as syn
import jax
import numpy as np

from tiefjax.errors import TiefjaxError
from tiefjax.train.loop import run_loop
from tiefjax.train.tasks import ClassifierConfig, make_task


class Slow:
    """A source that takes ``sleep`` seconds per example, so a run can be killed mid-way."""

    def __init__(self, src, sleep: float):
        self.src, self.sleep = src, sleep

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i):
        time.sleep(self.sleep)
        return self.src[i]


def main() -> None:
    train_dir, out, steps, batch, every, keep, sleep = sys.argv[1:8]
    cfg = ClassifierConfig.tiny(
        steps=int(steps),
        batch_size=int(batch),
        checkpoint_every=int(every),
        keep_checkpoints=int(keep),
        eval_every=int(every),
        log_every=int(every),
        learning_rate=3e-3,
        warmup_steps=2,
    )
    task = make_task("classifier", cfg, channels=syn.C)
    try:
        r = run_loop(
            task,
            Slow(syn.classification(96, 0), float(sleep)),
            syn.classification(24, 1),
            cfg,
            train_dir,
            progress=False,
        )
    except TiefjaxError as err:
        print(json.dumps({"error": str(err)}))
        return
    flat = {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_leaves_with_path(r.params)
    }
    np.savez(out, **flat)
    print(
        json.dumps({"step": r.step, "resumed_from": r.resumed_from, "devices": jax.device_count()})
    )


if __name__ == "__main__":
    main()
