"""``tiefjax demo [WORKSPACE]``: generate a catalog, train, index, evaluate and serve it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from tiefjax.demo import DEFAULT_WORKSPACE, SIZES

    p = sub.add_parser(
        "demo",
        help="run the whole system on a synthetic catalog with ground truth, then serve it",
        description=(
            "Generates a synthetic product catalog with ground-truth boxes and same-product "
            "groups, loads its annotations, prepares the training sets, trains the classifier, "
            "box regressors and ranking net, builds both search indexes, prints a results table "
            "(also written to WORKSPACE/results.json) and serves the site. Running it again "
            "resumes: finished stages are re-used, not redone. Sizes: "
            + "; ".join(f"{s.name} ({s.photos} photos, {s.about})" for s in SIZES.values())
        ),
    )
    p.add_argument(
        "workspace",
        nargs="?",
        default=DEFAULT_WORKSPACE,
        help=f"workspace folder (default ./{DEFAULT_WORKSPACE}; created)",
    )
    p.add_argument("--size", choices=tuple(SIZES), default="default", help="catalog size")
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision AlexNet state dict (.pth) to port first; without it (and nothing "
        "ported before) the encoder is a random init",
    )
    p.add_argument("--no-serve", action="store_true", help="stop after the results table")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to serve on (default 8000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalog")
    p.add_argument(
        "--pretrain",
        action="store_true",
        help="also pretrain the encoder on the catalog (tiefjax pretrain) and show the figures "
        "before and after (the default size adds about 15 minutes on 2 CPU cores)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tiefjax.demo import run_demo

    run_demo(
        args.workspace,
        size=args.size,
        weights=args.weights,
        serve=not args.no_serve,
        host=args.host,
        port=args.port,
        seed=args.seed,
        pretrain=args.pretrain,
    )
    return 0
