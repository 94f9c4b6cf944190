#!/usr/bin/env python3
"""Copy detection on a catalog: recall@1 / recall@10 of finding a copied photo's source, per
transform (mirror, crop, plain and textured padding, rescale, JPEG, colour, rotation) and overall.

    .venv/bin/python scripts/bench/copydetect.py                   # the default demo catalog
    .venv/bin/python scripts/bench/copydetect.py --folder PHOTOS   # any folder of photos
    .venv/bin/python scripts/bench/copydetect.py --workspace WS    # a workspace as it is
        [--demo-catalog DIR]   # its demo catalog: how many misses find the same product
    .venv/bin/python scripts/bench/copydetect.py --pretrain        # + after `tiefjax pretrain`

With a catalog (demo or ``--folder``) the photos go into a fresh workspace (no boxes, no trained
heads: whole photos) and each descriptor variant is indexed and measured in turn: ``plain``
(neither invariance), ``mirror`` ([index] mirror), ``trim`` ([index] trim_borders) and ``both``
(the defaults), each without and with the copy check (``[index] copy_check``: the first hits'
photos aligned with the copy; ``--copy-check on|off`` for one of them). With ``--pretrain`` the
encoder is then pretrained on the catalog (``tiefjax pretrain``, ``--pretrain-steps``) and the
variants are measured again. On the demo catalog the same-product recall@10 of the whole-photo
index is reported next to it. Copies are seeded (``--seed``): every run searches the same
copies. ``--workspace`` measures a workspace's current index with its own settings, locator and
encoder, and changes nothing in it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "plain": (False, False),
    "mirror": (True, False),
    "trim": (False, True),
    "both": (True, True),
}


def catalog_photos(ws) -> list[tuple[str, Path]]:
    from tiefjax.store import Store

    with Store(ws.store_path) as store:
        return [(rec.id, Path(rec.path)) for rec in store.list_images()]


def product_recall(searcher, product_of: dict[str, str]) -> float | None:
    from tiefjax.evaluate import same_product_recall

    ranked = {i: [h.id for h in searcher.neighbours(i, 10)] for i in product_of}
    return same_product_recall(ranked, product_of)[0]


def measure(
    ws, label: str, photos, transforms, seed: int, product_of, mode: str, check: bool
) -> list[str]:
    from tiefjax.copydetect import copy_detection
    from tiefjax.index.config import IndexConfig
    from tiefjax.search import Searcher

    label += " + copy check" if check else ""
    searcher = Searcher.load(ws, ws.section("index", IndexConfig).with_(copy_check=check))
    scores = copy_detection(searcher, photos, transforms, mode, seed, product_of or None)
    recall = product_recall(searcher, product_of) if product_of else None
    cells = [f"{scores.recall(t, 1):.3f} / {scores.recall(t, 10):.3f}" for t in transforms]
    overall = f"**{scores.recall(None, 1):.3f}** / {scores.recall(None, 10):.3f}"
    same = "" if recall is None else f"{recall:.3f}"
    n = sum(scores.copies.values())
    print(
        f"{label}: {n} copies in {scores.seconds:.1f} s ({n / scores.seconds:.1f} copies/s), "
        f"recall@1 {scores.recall(None, 1):.3f}, recall@10 {scores.recall(None, 10):.3f}"
        + (f", errors {scores.errors}" if scores.errors else ""),
        flush=True,
    )
    if product_of:  # what the misses are: another photo of the same product first?
        misses = {t: scores.copies[t] - scores.hits_at_1[t] for t in transforms}
        within = {t: scores.hits_at_k[t] - scores.hits_at_1[t] for t in transforms}
        print(
            f"{label}: misses whose first hit is the same product: "
            f"{sum(scores.same_product_misses.values())} of {sum(misses.values())} ("
            + ", ".join(
                f"{t} {scores.same_product_misses[t]}/{misses[t]}" for t in transforms if misses[t]
            )
            + "); mean score gap to the source when in the top 10: "
            + ", ".join(
                f"{t} {scores.gap_sum[t] / within[t]:.3f}" for t in transforms if within[t]
            ),
            flush=True,
        )
    return [label, *cells, overall, same, f"{scores.seconds:.0f}"]


def write_variant(ws, mirror: bool, trim: bool) -> None:
    from tiefjax.workspace import atomic_write_text

    text = f"[index]\nmirror = {str(mirror).lower()}\ntrim_borders = {str(trim).lower()}\n"
    atomic_write_text(ws.config_path, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--folder", type=Path, help="a folder of photos (default: the demo catalog)")
    where.add_argument("--workspace", type=Path, help="measure this workspace's index as it is")
    ap.add_argument("--demo-size", default="default", help="demo catalog size (tiefjax demo)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tiefjax-copydetect"))
    ap.add_argument("--variants", default="plain,mirror,trim,both")
    ap.add_argument("--transforms", default="", help="comma list (default: every transform)")
    ap.add_argument("--mode", default="unsupervised", help="search mode (--workspace only)")
    ap.add_argument(
        "--demo-catalog", type=Path, help="with --workspace: its demo catalog (products of misses)"
    )
    ap.add_argument("--photos", type=int, default=0, help="only the first N photos (0 = all)")
    ap.add_argument("--pretrain", action="store_true", help="also measure after pretraining")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="0 = the [pretrain] default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--copy-check", choices=("on", "off", "both"), default="both", help="[index] copy_check"
    )
    args = ap.parse_args()
    checks = {"on": [True], "off": [False], "both": [False, True]}[args.copy_check]

    from tiefjax.augment import TRANSFORMS
    from tiefjax.catalog import init_workspace
    from tiefjax.index.build import build_index
    from tiefjax.workspace import Workspace

    transforms = [t for t in args.transforms.split(",") if t] or list(TRANSFORMS)
    header = ["variant", *transforms, "overall", "same-product R@10", "seconds"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    product_of: dict[str, str] = {}
    if args.workspace:
        ws = Workspace(args.workspace)
        photos = catalog_photos(ws)[: args.photos or None]
        if args.demo_catalog:
            from tiefjax.demo_catalog import load_manifest

            product_of = {p.id: p.product for p in load_manifest(args.demo_catalog).photos}
        for check in checks:
            cells = measure(
                ws, str(ws.root), photos, transforms, args.seed, product_of, args.mode, check
            )
            table.append("| " + " | ".join(cells) + " |")
        print("\nrecall@1 / recall@10 per transform\n\n" + "\n".join(table))
        return 0

    images = args.folder
    if images is None:
        from tiefjax.demo import demo_size
        from tiefjax.demo_catalog import make_demo_catalog

        spec = demo_size(args.demo_size)
        manifest = make_demo_catalog(args.work / "catalog", spec.photos, args.seed)
        images = args.work / "catalog" / "images"
        product_of = {p.id: p.product for p in manifest.photos}
    ws = Workspace(args.work / "ws")
    init_workspace(ws.root, images)
    photos = catalog_photos(ws)[: args.photos or None]
    print(f"{len(photos)} photos x {len(transforms)} transforms, seed {args.seed}", flush=True)
    variants = [v for v in args.variants.split(",") if v]
    rounds = [("", False)] + ([("pretrained ", True)] if args.pretrain else [])
    for prefix, pretrained in rounds:
        if pretrained:
            from tiefjax.pretrain import pretrain

            t0 = time.perf_counter()
            overrides = {"steps": args.pretrain_steps} if args.pretrain_steps else {}
            report = pretrain(ws, progress=False, **overrides)
            print(f"pretrained in {time.perf_counter() - t0:.0f} s: {report.summary()}", flush=True)
        for name in variants:
            write_variant(ws, *VARIANTS[name])
            build_index(ws, progress=False, log=lambda _m: None)
            for check in checks:
                row = measure(
                    ws,
                    prefix + name,
                    photos,
                    transforms,
                    args.seed,
                    product_of,
                    "unsupervised",
                    check,
                )
                table.append("| " + " | ".join(row) + " |")
    print("\nrecall@1 / recall@10 per transform (whole photos: no boxes, no locator)\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    from tiefjax.errors import TiefjaxError

    try:
        sys.exit(main())
    except TiefjaxError as err:  # bad options or photos: one line, as the CLI says it
        print(f"copydetect: {err}", file=sys.stderr)
        sys.exit(2)
