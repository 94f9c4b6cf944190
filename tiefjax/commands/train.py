"""``tiefjax train WORKSPACE classifier|regressor|ranking``: train one head, print its metrics."""

from __future__ import annotations

import argparse
import json

from tiefjax.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the crop classifier, the box regressors or the ranking net",
        description=(
            "Train one head on the prepared data (run `tiefjax prepare` first). The encoder is "
            "frozen unless --finetune-encoder; its features are computed once and cached. "
            "An interrupted run resumes from its last checkpoint when run again. Settings come "
            "from [train.<task>] in tiefjax.toml; the options below override them."
        ),
    )
    p.add_argument("workspace", help="workspace folder")
    p.add_argument("task", choices=("classifier", "regressor", "ranking"))
    p.add_argument("--steps", type=int, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, help="global batch (a multiple of the device count)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate of the head")
    p.add_argument("--seed", type=int, help="seed of the init and of the data order")
    p.add_argument(
        "--finetune-encoder",
        action="store_true",
        default=None,
        help="train the encoder too (slow on CPU)",
    )
    p.add_argument("--reset", action="store_true", help="discard earlier checkpoints first")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tiefjax.train.artifacts import train

    with Workspace(args.workspace).writing(f"the {args.task}'s checkpoints") as ws:
        report = train(
            ws,
            args.task,
            reset=args.reset,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            finetune_encoder=args.finetune_encoder,
        )
    if args.json:
        data = {k: v for k, v in vars(report).items() if k != "train_dir"}
        print(json.dumps({**data, "train_dir": str(report.train_dir)}, indent=1))
    else:
        print(report.summary())
    return 0
