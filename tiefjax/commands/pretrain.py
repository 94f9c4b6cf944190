"""``tiefjax pretrain WS``: self-supervised pretraining of the encoder on the catalog's photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="adapt the encoder to the catalog's own photos (self-supervised, no labels)",
        description=(
            "Train the AlexNet encoder on two augmented views of every catalog photo (crops, "
            "mirror, scale, colour, JPEG, padding, small rotations) with SimCLR's contrastive "
            "loss, starting from the ported ImageNet weights or the seeded random init. The "
            "result replaces the workspace's encoder for every later step: train the heads "
            "again (tiefjax train), then index. An interrupted run resumes when run "
            "again. Settings come from [pretrain] in tiefjax.toml; options below override them."
        ),
    )
    p.add_argument("workspace", type=Path, help="workspace folder")
    p.add_argument("--steps", type=int, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, help="photos per global batch (two views each)")
    p.add_argument("--encoder-learning-rate", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed of the views and of the data order")
    p.add_argument("--reset", action="store_true", help="discard earlier checkpoints first")
    p.add_argument(
        "--discard",
        action="store_true",
        help="remove the pretrained encoder: the ported (or random) one is used again",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tiefjax.pretrain import discard, pretrain  # noqa: PLC0415 (keeps `tiefjax --help` fast)
    from tiefjax.workspace import Workspace  # noqa: PLC0415

    with Workspace(args.workspace).writing("the pretrained encoder") as ws:
        if args.discard:
            gone = discard(ws)
            print("pretrained encoder removed" if gone else "there was no pretrained encoder")
            return 0
        report = pretrain(
            ws,
            reset=args.reset,
            steps=args.steps,
            batch_size=args.batch_size,
            encoder_learning_rate=args.encoder_learning_rate,
            seed=args.seed,
        )
    print(json.dumps(vars(report), indent=1) if args.json else report.summary())
    return 0
