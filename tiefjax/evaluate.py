"""Score a demo workspace against the ground truth its synthetic catalog was rendered with.

The demo catalog (:mod:`tiefjax.demo_catalog`) knows, for every photo, the tight box of the
garment and which product it shows. That lets the whole pipeline be measured, not just run:

* **box mean IoU** — :class:`~tiefjax.locate.Locator` boxes against the manifest boxes, on the
  photos of the test split (``split_of`` with the workspace's ``[prepare]`` ``test_fraction`` and
  ``seed``: the locator never trained on their crops) and, for reference, on all photos. A photo
  where no window passed the threshold counts with its whole-photo fallback box.
* **same-product recall@k** (k = 10) per search mode, from the index's precomputed neighbours.
  For a photo ``q`` of product ``P`` let ``m = |P| - 1`` be the number of *other* indexed photos
  of ``P`` and ``N_k(q)`` its top-``k`` neighbours (``q`` itself excluded). Then
  ``recall@k(q) = |N_k(q) ∩ P| / min(k, m)``, which is 1.0 when every slot that *could* hold a
  photo of the same product does. The reported figure is the mean over all indexed photos with
  ``m >= 1`` (``all``), and over those among them in the test split (``test``).
* **classifier accuracy / regressor IoU / triplet accuracy** — the test-split metrics that
  training recorded (:class:`~tiefjax.train.artifacts.TrainReport` or the saved ``meta``), with
  the untrained value next to it (triplet accuracy at step 0 is the unsupervised descriptor).
* **ScaNN recall@10 vs exact** — measured by ``build_index`` per mode and kept in the index info;
  when the catalog is small enough to be served by exact search (that figure is then 1 by
  definition), measured on a ScaNN AH index built in memory over the same descriptors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tiefjax.demo_catalog import DemoManifest
from tiefjax.errors import NotFound
from tiefjax.workspace import Workspace

#: Neighbours looked at for same-product recall.
RECALL_K = 10
TASKS = ("classifier", "regressor", "ranking")


@dataclass
class BoxScores:
    """Locator boxes vs ground truth: mean IoU on test photos and on all photos."""

    test_mean_iou: float | None
    all_mean_iou: float | None
    test_photos: int
    all_photos: int
    fallbacks: int  # photos where no window passed the threshold (whole photo used)
    per_photo: dict[str, float] = field(default_factory=dict)  # id -> IoU
    seconds: float = 0.0


@dataclass
class Evaluation:
    """Every ground-truth figure of one demo workspace (``None`` = could not be measured)."""

    boxes: BoxScores | None
    recall: dict[str, dict[str, float | int | None]]  # mode -> {"all", "test", "queries"}
    training: dict[str, dict[str, Any]]  # task -> {"metrics", "baseline", "step", "primary"}
    scann_recall: dict[str, float | None]  # mode -> recall@10 vs exact
    index_kind: dict[str, str | None]  # mode -> the index kind the recall was measured on
    notes: list[str] = field(default_factory=list)

    def headline(self) -> dict[str, float | None]:
        """The figures of the results table, flat, by name."""
        t = self.training
        metric = lambda task, key, part="metrics": (t.get(task) or {}).get(part, {}).get(key)  # noqa: E731
        return {
            "classifier_accuracy": metric("classifier", "accuracy"),
            "classifier_accuracy_untrained": metric("classifier", "accuracy", "baseline"),
            "regressor_iou": metric("regressor", "iou"),
            "box_mean_iou_test": self.boxes.test_mean_iou if self.boxes else None,
            "box_mean_iou_all": self.boxes.all_mean_iou if self.boxes else None,
            "triplet_accuracy": metric("ranking", "accuracy"),
            "triplet_accuracy_untrained": metric("ranking", "accuracy", "baseline"),
            "recall_at_10_unsupervised": self.recall.get("unsupervised", {}).get("all"),
            "recall_at_10_supervised": self.recall.get("supervised", {}).get("all"),
            "recall_at_10_unsupervised_test": self.recall.get("unsupervised", {}).get("test"),
            "recall_at_10_supervised_test": self.recall.get("supervised", {}).get("test"),
            "scann_recall_unsupervised": self.scann_recall.get("unsupervised"),
            "scann_recall_supervised": self.scann_recall.get("supervised"),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.boxes is not None:
            out["boxes"].pop("per_photo", None)
        return out


# -- the pieces ---------------------------------------------------------------------------------
def ids_in_test_split(ws: Workspace, ids: Iterable[str]) -> set[str]:
    """The ids of ``ids`` that fall in the test split under the workspace's ``[prepare]``."""
    from tiefjax.data.crops import PrepareConfig
    from tiefjax.data.splits import split_of

    cfg = ws.section("prepare", PrepareConfig)
    return {i for i in ids if split_of(i, cfg.test_fraction, cfg.seed) == "test"}


def box_scores(ws: Workspace, manifest: DemoManifest, locator: Any = None) -> BoxScores:
    """Run the trained locator on every photo of ``manifest`` registered in ``ws``; IoU vs truth.

    The boxes found are kept as the photos' detections (the site shows them next to the
    annotated boxes; the index still encodes an annotated photo with its annotation). NotFound
    when the classifier or the regressors are not trained yet.
    """
    from tiefjax.images import load_rgb_scaled
    from tiefjax.locate import Locator
    from tiefjax.store import Box, Detection, Store
    from tiefjax.train.tasks import box_iou

    t0 = time.perf_counter()
    locator = locator if locator is not None else Locator.load(ws)
    with Store(ws.store_path) as store:
        paths = {rec.id: rec.path for rec in store.list_images()}
    photos = [p for p in manifest.photos if p.id in paths]
    per_photo: dict[str, float] = {}
    fallbacks = 0
    detections = []
    step, side = locator.batch_size, locator.config.decode_short_side
    for start in range(0, len(photos), step):
        part = photos[start : start + step]
        decoded = [load_rgb_scaled(paths[p.id], side, name=p.id) for p in part]
        for photo, found in zip(part, locator.locate_decoded(decoded), strict=True):
            fallbacks += int(found.fallback)
            per_photo[photo.id] = float(box_iou(np.array([found.box]), np.array([photo.box]))[0])
            unsure, reason = locator.uncertainty(found)
            detections.append(
                Detection(
                    photo.id, Box(*found.box), found.probability, found.fallback, unsure, reason
                )
            )
    with Store(ws.store_path) as store:
        store.put_detections(detections)
    tests = ids_in_test_split(ws, per_photo)
    test_values = [v for k, v in per_photo.items() if k in tests]
    return BoxScores(
        test_mean_iou=_mean(test_values),
        all_mean_iou=_mean(per_photo.values()),
        test_photos=len(test_values),
        all_photos=len(per_photo),
        fallbacks=fallbacks,
        per_photo=per_photo,
        seconds=time.perf_counter() - t0,
    )


def same_product_recall(
    neighbours: Mapping[str, Sequence[str]],
    product_of: Mapping[str, str],
    k: int = RECALL_K,
    queries: Iterable[str] | None = None,
) -> tuple[float | None, int]:
    """Mean same-product recall@k (see the module docstring) and how many queries it averages.

    ``neighbours[id]`` are the ids ranked for ``id`` (itself excluded; only the first ``k``
    count); ``product_of`` maps every indexed id to its product. Queries without another photo
    of their product are skipped; ``None`` when none is left.
    """
    members: dict[str, set[str]] = {}
    for image_id, product in product_of.items():
        members.setdefault(product, set()).add(image_id)
    values = []
    for q in neighbours if queries is None else queries:
        if q not in product_of or q not in neighbours:
            continue
        others = members[product_of[q]] - {q}
        if not others:
            continue
        top = [n for n in neighbours[q] if n != q][:k]
        values.append(sum(1 for n in top if n in others) / min(k, len(others)))
    return _mean(values), len(values)


def index_recall(
    searcher: Any, manifest: DemoManifest, ws: Workspace, k: int = RECALL_K
) -> dict[str, dict[str, float | int | None]]:
    """Same-product recall@k per mode of the searcher's index: ``{"all", "test", "queries"}``."""
    indexed = set(searcher.ids)
    product_of = {p.id: p.product for p in manifest.photos if p.id in indexed}
    tests = ids_in_test_split(ws, product_of)
    out: dict[str, dict[str, float | int | None]] = {}
    for mode in searcher.modes:
        ranked = {i: [h.id for h in searcher.neighbours(i, k, mode)] for i in product_of}
        all_recall, n_all = same_product_recall(ranked, product_of, k)
        test_recall, n_test = same_product_recall(ranked, product_of, k, queries=tests)
        out[mode] = {
            "all": all_recall,
            "test": test_recall,
            "queries": n_all,
            "test_queries": n_test,
        }
    return out


def training_scores(
    ws: Workspace, reports: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Test metrics and untrained baselines per task, from ``reports`` (TrainReport) when given,
    else from what ``train`` saved with the params. Untrained tasks are left out."""
    from tiefjax.train.artifacts import load_trained

    out: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        report = (reports or {}).get(task)
        if report is not None:
            out[task] = {
                "metrics": dict(report.metrics),
                "baseline": dict(report.baseline),
                "step": report.step,
                "primary": report.primary,
            }
            continue
        trained = load_trained(ws, task)
        if trained is not None:
            meta = trained.meta
            out[task] = {
                "metrics": dict(meta.get("metrics", {})),
                "baseline": dict(meta.get("baseline", {})),
                "step": meta.get("step"),
                "primary": "iou" if task == "regressor" else "accuracy",
            }
    return out


def scann_recall(
    ws: Workspace, searcher: Any, notes: list[str] | None = None
) -> tuple[dict[str, float | None], dict[str, str | None]]:
    """ScaNN recall@10 against exact search per mode, and how it was measured.

    A ScaNN index (brute force, AH, tree) reports the recall ``build_index`` measured. Small
    catalogs are served by exact search, where that figure is 1 by definition; then an AH index
    (ScaNN's asymmetric hashing, tuned to ``[index] target_recall`` as a build would) is built in
    memory over the same descriptors and measured, so the figure says what ScaNN keeps.
    """
    from pathlib import Path

    from tiefjax.index.config import IndexConfig
    from tiefjax.index.scann_index import VectorIndex, choose_params

    cfg = ws.section("index", IndexConfig)
    recall: dict[str, float | None] = {}
    kinds: dict[str, str | None] = {}
    for mode, info in searcher.info.get("modes", {}).items():
        kind = info.get("kind")
        if kind != "exact":
            recall[mode], kinds[mode] = info.get("recall_at_10"), kind
            continue
        try:
            vectors = np.load(Path(searcher.info["path"]) / mode / "vectors.npy")
            index = VectorIndex.build(vectors, choose_params(len(vectors), cfg.with_(kind="ah")))
            recall[mode] = float(index.autotune(cfg.target_recall, cfg.recall_sample))
            kinds[mode] = f"ah, reorder {index.params.reorder} (in memory; served: exact)"
        except Exception as err:  # noqa: BLE001 - a figure of the report, never fatal
            recall[mode], kinds[mode] = None, None
            if notes is not None:
                notes.append(f"ScaNN recall ({mode}) not measured: {err}")
    return recall, kinds


# -- all of it ----------------------------------------------------------------------------------
def evaluate(
    ws: Workspace,
    manifest: DemoManifest,
    reports: Mapping[str, Any] | None = None,
    searcher: Any = None,
    locator: Any = None,
) -> Evaluation:
    """Every figure of :class:`Evaluation` that the workspace's current state allows; what is
    missing (no locator, no index) is ``None`` with a note saying why."""
    notes: list[str] = []
    try:
        boxes = box_scores(ws, manifest, locator)
    except NotFound as err:
        boxes = None
        notes.append(f"box IoU not measured: {err}")
    if searcher is None:
        from tiefjax.search import Searcher

        try:
            searcher = Searcher.load(ws)
        except NotFound as err:
            notes.append(f"search not measured: {err}")
    recall: dict[str, dict[str, float | int | None]] = {}
    scann: dict[str, float | None] = {}
    kinds: dict[str, str | None] = {}
    if searcher is not None:
        recall = index_recall(searcher, manifest, ws)
        scann, kinds = scann_recall(ws, searcher, notes)
        if "supervised" not in searcher.modes:
            notes.append("no supervised index: the ranking net was not trained")
    return Evaluation(
        boxes=boxes,
        recall=recall,
        training=training_scores(ws, reports),
        scann_recall=scann,
        index_kind=kinds,
        notes=notes,
    )


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(sum(values) / len(values)) if values else None
