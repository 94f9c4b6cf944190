"""Does the similarity review queue pick better triplets to annotate than chance?

    .venv/bin/python scripts/bench/active_learning_triplets.py [--photos 160] [--seeds 0 1 2]

The triplet twin of active_learning.py, an annotator simulated with the demo catalog's ground
truth. Every photo has its ground-truth box (the index encodes the product window, no locator
needed). ``--start`` ground-truth triplets whose reference is in the prepared train split are
stored, the ranking net is trained and the catalog indexed (unsupervised + supervised). Then
``--add`` triplets are added two ways, each followed by training the ranking net from scratch
and indexing again:

- **queue**: the similarity review queue of that index, as ``GET /api/review/triplets``
  serves it and the similarity editor opens on it (references whose supervised and
  unsupervised top-10 disagree most, with the pair to judge);
- **random**: a random train-split reference and two random photos of its unsupervised
  top-10 (what the editor's candidates offer).

The annotator answers a pair by the ground truth (same product > same silhouette and colour >
anything else) and skips pairs it cannot tell apart (equal rank) or whose reference is in the
test split. Reported: same-product recall@10 of the supervised index over the test-split
queries, per seed and on average. The encoder is the seeded random AlexNet.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# before NumPy, as `tiefjax` runs: sets OpenBLAS's thread timeout (see tiefjax/__init__.py)
import tiefjax  # noqa: E402, F401

# isort: split
from active_learning import bench_args, demo_workspace  # noqa: E402  (same folder)

from tiefjax.data.crops import PrepareConfig  # noqa: E402
from tiefjax.data.splits import split_of  # noqa: E402
from tiefjax.demo_catalog import (  # noqa: E402
    DemoPhoto,
    ground_truth_triplets,
    similarity_rank,
)
from tiefjax.evaluate import same_product_recall  # noqa: E402
from tiefjax.index.build import build_index  # noqa: E402
from tiefjax.index.config import IndexConfig  # noqa: E402
from tiefjax.prepare import prepare  # noqa: E402
from tiefjax.search import Searcher  # noqa: E402
from tiefjax.server.review import TripletQueue  # noqa: E402
from tiefjax.store import Box, Store  # noqa: E402
from tiefjax.train.artifacts import train  # noqa: E402
from tiefjax.workspace import Workspace  # noqa: E402

PREPARE = PrepareConfig(
    test_fraction=0.3, short_sides=(224,), crops_per_scale=1, flips=False, seed=0
)
RANKING = dict(steps=150, batch_size=16, eval_every=150)
INDEX = IndexConfig.tiny()
K = 10
Triplet = tuple[str, str, str]


def main() -> None:
    args = bench_args(__doc__, 160, "triplets")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tiefjax-al-") as tmp:
        manifest, ws, truth = demo_workspace(Path(tmp), args.photos)
        with Store(ws.store_path) as store, store.transaction():
            for p in manifest.photos:
                store.put_box(p.id, Box(*p.box), None)
        test = {i for i in truth if split_of(i, PREPARE.test_fraction, PREPARE.seed) == "test"}
        known = [t for t in ground_truth_triplets(manifest, 0, 2) if t[0] not in test]
        print(
            f"demo catalog: {len(truth)} photos of {len({p.product for p in truth.values()})} "
            f"products; {len(test)} test-split queries; start with {args.start} triplets, add "
            f"{args.add} per strategy"
        )
        rows = []
        for seed in args.seeds:
            start = random.Random(seed).sample(known, args.start)
            base, searcher = run(ws, truth, test, start)
            queued = take(answers(truth, test, queue_pairs(searcher, start)), start, args.add)
            rng = random.Random(1000 + seed)
            randomly = take(
                answers(truth, test, random_pairs(searcher, test, rng)), start, args.add
            )
            by_queue, _ = run(ws, truth, test, start + queued)
            by_random, _ = run(ws, truth, test, start + randomly)
            rows.append((base, by_queue, by_random))
            print(
                f"seed {seed}: start recall@10 {base:.3f} | +queue {by_queue:.3f} | "
                f"+random {by_random:.3f}",
                flush=True,
            )
    report(rows, args, time.perf_counter() - t0)


def run(
    ws: Workspace, truth: dict[str, DemoPhoto], test: set[str], triplets: list[Triplet]
) -> tuple[float, Searcher]:
    """Store exactly ``triplets``, prepare, train the ranking net afresh, index; the supervised
    same-product recall@10 over the test-split queries, and the index's searcher."""
    with Store(ws.store_path) as store, store.transaction():
        for t in store.list_triplets():
            store.delete_triplet(t.id)
        for t in triplets:
            store.add_triplet(*t)
    prepare(ws, PREPARE)
    train(ws, "ranking", reset=True, progress=False, **RANKING)
    build_index(ws, INDEX, progress=False, log=lambda _msg: None)
    searcher = Searcher.load(ws)
    ranked = {i: [h.id for h in searcher.neighbours(i, K, "supervised")] for i in truth}
    product_of = {i: p.product for i, p in truth.items()}
    recall, _ = same_product_recall(ranked, product_of, K, queries=sorted(test))
    assert recall is not None
    return recall, searcher


def queue_pairs(searcher: Searcher, start: list[Triplet]) -> Iterator[tuple[str, str, str]]:
    """(reference, first, second) in the review queue's order, as the server pages it: pairs
    with an image already judged with the reference left out."""
    ranked = TripletQueue().ranked(searcher, searcher.modes)
    judged: dict[str, set[str]] = {}
    for ref, pos, neg in start:
        judged.setdefault(ref, set()).update((pos, neg))
    for row in ranked.order:
        ref, a, b = ranked.pair(row)
        if not judged.get(ref, set()) & {a, b}:
            yield ref, a, b


def random_pairs(
    searcher: Searcher, test: set[str], rng: random.Random
) -> Iterator[tuple[str, str, str]]:
    """Random train-split references, each with two random photos of its unsupervised top-10."""
    references = [i for i in searcher.ids if i not in test]
    while True:
        ref = rng.choice(references)
        a, b = rng.sample([h.id for h in searcher.neighbours(ref, K, "unsupervised")], 2)
        yield ref, a, b


def answers(
    truth: dict[str, DemoPhoto], test: set[str], pairs: Iterator[tuple[str, str, str]]
) -> Iterator[Triplet]:
    """The simulated annotator: the triplet each pair gets, skipping pairs it cannot tell apart
    and references in the test split (their triplets would only go to the test set)."""
    for ref, a, b in pairs:
        ra, rb = similarity_rank(truth[ref], truth[a]), similarity_rank(truth[ref], truth[b])
        if ref not in test and ra != rb:
            yield (ref, a, b) if ra > rb else (ref, b, a)


def take(found: Iterator[Triplet], start: list[Triplet], n: int) -> list[Triplet]:
    """The first ``n`` new triplets (fewer when the pairs run out)."""
    have, out = set(start), []
    for t in found:
        if t not in have:
            have.add(t)
            out.append(t)
            if len(out) == n:
                break
    return out


def report(
    rows: list[tuple[float, float, float]], args: argparse.Namespace, seconds: float
) -> None:
    start, queue, rand = (statistics.fmean(r[k] for r in rows) for k in range(3))
    gq, gr = queue - start, rand - start
    wins = sum(r[1] > r[2] for r in rows)
    print()
    head = f"start ({args.start}) | +{args.add} by queue | +{args.add} at random"
    print(f"| metric | {head} | queue gain | random gain | ratio |")
    print("|---|---|---|---|---|---|---|")
    ratio = f"{gq / gr:.2f}x" if gr > 0 else "n/a (random gain <= 0)"
    print(
        f"| same-product recall@10 (supervised, test queries) | {start:.3f} | {queue:.3f} | "
        f"{rand:.3f} | {gq:+.3f} | {gr:+.3f} | {ratio} |"
    )
    met = (gr > 0 and gq >= 1.5 * gr) or (gr <= 0 < gq)
    print()
    print(f"the queue's recall gain beat the random pick's in {wins} of {len(rows)} seeds")
    print(
        f"mean over seeds {args.seeds}; {seconds:.0f} s in all. Target (queue's gain >= 1.5x "
        f"random's): {'MET' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
