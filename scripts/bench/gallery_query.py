"""Gallery pages with filters and sorts (GET /api/images -> Store.catalog_page) on a big catalog.

    .venv/bin/python scripts/bench/gallery_query.py [--images 100000]

A store of N images, half of them located (random boxes and probabilities), a third annotated,
no photos on disk (the store never reads them). Prints the median time of a first page, the
next page by keyset (``after``) and a deep page by offset, for each filter and sort; then the
probability sort again without its index (``detections_score``), to show what the index buys.
Every page is one SQL statement, with the filtered count.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from tiefjax.gallery_query import CatalogQuery
from tiefjax.store import Detection, ImageRecord, Store

QUERIES = [
    {},
    {"order": "desc"},
    {"q": "123"},
    {"q": "img-0001", "match": "prefix"},
    {"state": "annotated"},
    {"state": "detected"},
    {"state": "none"},
    {"sort": "probability"},
    {"sort": "probability", "order": "desc", "state": "detected"},
    {"sort": "iou"},
]
REPEATS = 5


def fill(store: Store, n: int) -> None:
    rng = random.Random(0)
    ids = [f"img-{i:07d}" for i in range(n)]
    store.upsert_images(ImageRecord(i, f"{i}.jpg", 640, 480, "0" * 64) for i in ids)

    def corners() -> tuple[float, float, float, float]:
        return (
            rng.uniform(0, 200),
            rng.uniform(0, 150),
            rng.uniform(300, 640),
            rng.uniform(250, 480),
        )

    store.put_detections(
        Detection(i, corners(), rng.random(), rng.random() < 0.05) for i in ids[::2]
    )
    with store.transaction():
        for i in ids[::3]:
            store.put_box(i, corners())


def median_ms(fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def row(store: Store, params: dict[str, str], limit: int = 48) -> str:
    query = CatalogQuery(**params)
    first = store.catalog_page("", 0, limit, query)
    deep = max(0, first.total // 2)
    cells = [
        median_ms(lambda: store.catalog_page("", 0, limit, query)),
        median_ms(lambda: store.catalog_page(first.next_after or "", 0, limit, query)),
        median_ms(lambda: store.catalog_page("", deep, limit, query)),
    ]
    name = "&".join(f"{k}={v}" for k, v in params.items()) or "(none: by id)"
    return f"| `{name}` | {first.total} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.sqlite") as store:
        start = time.perf_counter()
        fill(store, args.images)
        took = time.perf_counter() - start
        print(f"{args.images} images, 1/2 located, 1/3 annotated (store filled in {took:.0f} s)")
        print(f"median of {REPEATS} pages of 48, ms\n")
        print("| filter / sort | images listed | first page | next (keyset) | middle (offset) |")
        print("|---|---|---|---|---|")
        for params in QUERIES:
            print(row(store, params))
        store._db.execute(
            "DROP INDEX detections_score"
        )  # what the probability sort costs without it
        print("\nwithout the detections_score index:\n")
        print("| filter / sort | images listed | first page | next (keyset) | middle (offset) |")
        print("|---|---|---|---|---|")
        print(row(store, {"sort": "probability"}))
        print(row(store, {"sort": "probability", "order": "desc", "state": "detected"}))


if __name__ == "__main__":
    main()
