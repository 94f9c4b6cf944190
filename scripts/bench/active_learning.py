"""Does the box review queue pick better photos to annotate than chance?

    .venv/bin/python scripts/bench/active_learning.py [--photos 80] [--seeds 0 1 2]

An annotator simulated with the demo catalog's ground truth. The photos in the prepared test
split (a stable hash of the id) are always annotated: they give the test figures. From the
rest (the pool), ``--start`` photos drawn at random are annotated, the classifier and the
regressors are trained, and the pool's unannotated photos are located and scored exactly as
``tiefjax index`` scores them (their detections stored with their uncertainty). Then ``--add``
more photos are annotated two ways, each followed by training both heads from scratch again:

- **queue**: the first ``--add`` photos of the box review queue (``Store.box_review_page``,
  what ``GET /api/review/boxes`` serves and the box editor opens on);
- **random**: ``--add`` photos drawn at random from the same unannotated pool.

Reported per seed and on average: the locator's mean box IoU on the test photos (against the
ground truth) and the classifier's test accuracy (on the prepared test crops), before and after
each way, and the gains. The target is a queue gain >= 1.5x the random gain. The encoder is the
seeded random AlexNet (no ImageNet weights here), as in the demo without ``--weights``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# before NumPy, as `tiefjax` runs: sets OpenBLAS's thread timeout (see tiefjax/__init__.py)
import tiefjax  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402

from tiefjax.catalog import init_workspace  # noqa: E402
from tiefjax.data.crops import PrepareConfig  # noqa: E402
from tiefjax.data.splits import split_of  # noqa: E402
from tiefjax.demo_catalog import DemoPhoto, make_demo_catalog  # noqa: E402
from tiefjax.images import load_rgb_scaled  # noqa: E402
from tiefjax.locate import LocateConfig, Locator  # noqa: E402
from tiefjax.prepare import prepare  # noqa: E402
from tiefjax.review import DISAGREE_IOU  # noqa: E402
from tiefjax.store import Box, Detection, Store  # noqa: E402
from tiefjax.train.artifacts import train  # noqa: E402
from tiefjax.train.tasks import box_iou  # noqa: E402
from tiefjax.workspace import Workspace  # noqa: E402

PREPARE = PrepareConfig(
    test_fraction=0.3, short_sides=(224, 288), crops_per_scale=3, flips=False, seed=0
)
LOCATE = LocateConfig(short_sides=(224, 288))
TRAIN = {
    "classifier": dict(steps=150, batch_size=32, eval_every=150, hidden=64, hidden2=32),
    "regressor": dict(steps=200, batch_size=32, eval_every=200, hidden=64, hidden2=32),
}


@dataclass
class Scores:
    iou: float  # mean box IoU of the locator on the test photos
    accuracy: float  # classifier accuracy on the test crops


def bench_args(doc: str, photos: int, what: str) -> argparse.Namespace:
    """The options both active-learning benchmarks take (``what`` is annotated: photos or
    triplets)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=photos, help="demo catalog size")
    parser.add_argument("--start", type=int, default=20, help=f"{what} annotated first")
    parser.add_argument("--add", type=int, default=20, help=f"{what} added by each strategy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return parser.parse_args()


def demo_workspace(root: Path, photos: int) -> tuple[Any, Workspace, dict[str, DemoPhoto]]:
    """A demo catalog of ``photos`` in ``root/demo``, registered in a workspace ``root/ws``:
    (manifest, workspace, photo by id)."""
    manifest = make_demo_catalog(root / "demo", n=photos, seed=0)
    init_workspace(root / "ws", root / "demo" / "images")
    return manifest, Workspace(root / "ws"), {p.id: p for p in manifest.photos}


def main() -> None:
    args = bench_args(__doc__, 80, "pool photos")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tiefjax-al-") as tmp:
        _, ws, truth = demo_workspace(Path(tmp), args.photos)
        test = sorted(
            i for i in truth if split_of(i, PREPARE.test_fraction, PREPARE.seed) == "test"
        )
        pool = sorted(set(truth) - set(test))
        print(
            f"demo catalog: {len(truth)} photos; test split {len(test)} (always annotated), "
            f"pool {len(pool)}; start with {args.start}, add {args.add} per strategy"
        )
        rows: list[tuple[int, Scores, Scores, Scores]] = []
        for seed in args.seeds:
            start = random.Random(seed).sample(pool, args.start)
            base = run(ws, truth, test, start)
            queued = queue_pick(ws, truth, pool, start, args.add)
            rest = sorted(set(pool) - set(start))
            randomly = random.Random(1000 + seed).sample(rest, args.add)
            by_queue = run(ws, truth, test, start + queued)
            by_random = run(ws, truth, test, start + randomly)
            rows.append((seed, base, by_queue, by_random))
            print(
                f"seed {seed}: start IoU {base.iou:.3f} acc {base.accuracy:.3f} | "
                f"+queue IoU {by_queue.iou:.3f} acc {by_queue.accuracy:.3f} | "
                f"+random IoU {by_random.iou:.3f} acc {by_random.accuracy:.3f}",
                flush=True,
            )
    report(rows, args, time.perf_counter() - t0)


def run(
    ws: Workspace, truth: dict[str, DemoPhoto], test: list[str], train_ids: list[str]
) -> Scores:
    """Annotate exactly ``test + train_ids`` (ground truth), prepare, train both heads afresh;
    the test photos' box IoU and the classifier's test accuracy."""
    annotate(ws, truth, set(test) | set(train_ids))
    prepare(ws, PREPARE)
    accuracy = float("nan")
    for task, overrides in TRAIN.items():
        rep = train(ws, task, reset=True, progress=False, **overrides)
        if task == "classifier":
            accuracy = float(rep.metrics["accuracy"])
    locator = Locator.load(ws, LOCATE)
    found = locate(ws, locator, test)
    ious = [
        float(box_iou(np.array([f.box]), np.array([truth[i].box]))[0])
        for i, f in zip(test, found, strict=True)
    ]
    return Scores(statistics.fmean(ious), accuracy)


def queue_pick(
    ws: Workspace, truth: dict[str, DemoPhoto], pool: list[str], start: list[str], n: int
) -> list[str]:
    """Locate the pool's unannotated photos with the heads trained on ``start``, store the
    detections with their uncertainty (as ``tiefjax index`` does) and take the queue's top
    ``n`` unannotated photos."""
    todo = sorted(set(pool) - set(start))
    locator = Locator.load(ws, LOCATE)
    found = locate(ws, locator, todo)
    detections = [
        Detection(i, Box(*f.box), f.probability, f.fallback, *locator.uncertainty(f))
        for i, f in zip(todo, found, strict=True)
    ]
    with Store(ws.store_path) as store:
        store.put_detections(detections, replace=True)
        items, _ = store.box_review_page(len(todo) + len(start), None, DISAGREE_IOU)
    picked = [i.image_id for i in items if i.box is None][:n]
    reasons = [i.reason for i in items if i.image_id in picked]
    print(
        f"  queue picked {len(picked)}: "
        + ", ".join(f"{r} {reasons.count(r)}" for r in sorted(set(reasons)))
    )
    return picked


def annotate(ws: Workspace, truth: dict[str, DemoPhoto], ids: set[str]) -> None:
    """The store holds the ground-truth box of exactly ``ids``."""
    with Store(ws.store_path) as store, store.transaction():
        for image_id, stored in store.boxes().items():
            if image_id not in ids:
                store.delete_box(image_id, stored.version)
        have = store.boxes()
        for image_id in sorted(ids - set(have)):
            store.put_box(image_id, Box(*truth[image_id].box), None)


def locate(ws: Workspace, locator: Locator, ids: list[str]) -> list:
    with Store(ws.store_path) as store:
        paths = {i: store.get_image(i).path for i in ids}
    side = locator.config.decode_short_side
    return locator.locate_decoded([load_rgb_scaled(paths[i], side, name=i) for i in ids])


def report(
    rows: list[tuple[int, Scores, Scores, Scores]], args: argparse.Namespace, seconds: float
) -> None:
    def gains(metric: str, k: int) -> list[float]:
        return [getattr(r[k], metric) - getattr(r[1], metric) for r in rows]

    print()
    head = f"start ({args.start}) | +{args.add} by queue | +{args.add} at random"
    print(f"| metric | {head} | queue gain | random gain | ratio |")
    print("|---|---|---|---|---|---|---|")
    for metric, name in (("iou", "test box IoU"), ("accuracy", "classifier test accuracy")):
        start = statistics.fmean(getattr(r[1], metric) for r in rows)
        queue = statistics.fmean(getattr(r[2], metric) for r in rows)
        rand = statistics.fmean(getattr(r[3], metric) for r in rows)
        gq, gr = statistics.fmean(gains(metric, 2)), statistics.fmean(gains(metric, 3))
        ratio = f"{gq / gr:.2f}x" if gr > 0 else "n/a (random gain <= 0)"
        print(
            f"| {name} | {start:.3f} | {queue:.3f} | {rand:.3f} | {gq:+.3f} | {gr:+.3f} | {ratio} |"
        )
    gq, gr = statistics.fmean(gains("iou", 2)), statistics.fmean(gains("iou", 3))
    met = gr > 0 and gq >= 1.5 * gr or gr <= 0 < gq
    wins = sum(q > r for q, r in zip(gains("iou", 2), gains("iou", 3), strict=True))
    print()
    print(f"the queue's box IoU gain beat the random pick's in {wins} of {len(rows)} seeds")
    print(
        f"mean over seeds {args.seeds}; {seconds:.0f} s in all. Target (queue's box IoU gain >= "
        f"1.5x random's): {'MET' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
