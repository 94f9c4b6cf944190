"""``tiefjax port WORKSPACE alexnet.pth [--check IMAGE]``: bring in ImageNet AlexNet weights."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np

from tiefjax.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "port",
        help="import torchvision AlexNet ImageNet weights (.pth state dict) into a workspace",
        description=(
            "Convert a torchvision AlexNet state dict, e.g. saved with "
            "torch.save(torchvision.models.alexnet(weights='IMAGENET1K_V1').state_dict(), "
            "'alexnet.pth'), into the workspace's encoder (WORKSPACE/models/encoder). "
            "The folder need not be a catalog yet. Reading .pth files needs PyTorch."
        ),
    )
    p.add_argument("workspace", type=Path, help="workspace folder (created if missing)")
    p.add_argument("weights", type=Path, help="torchvision AlexNet state dict (.pth or .npz)")
    p.add_argument(
        "--check",
        type=Path,
        metavar="IMAGE",
        help="after porting, print the ImageNet top-5 for IMAGE (a cat photo should say cat)",
    )
    p.set_defaults(func=run)


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet class names in torchvision's index order (None if the file is gone)."""
    try:
        text = resources.files("tiefjax.nets").joinpath("imagenet_classes.txt").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None
    names = text.splitlines()
    return names if len(names) == 1000 else None


def imagenet_top5(ws_root: Path, image: Path) -> list[tuple[int, str | None, float]]:
    """(class index, name, probability) of the 5 likeliest ImageNet classes for ``image``.

    Same preprocessing as torchvision's evaluation: short side 256, centre crop 224.
    """
    import jax

    from tiefjax.images import load_rgb, resize_short_side
    from tiefjax.models import imagenet_logits, load_encoder, make_encoder
    from tiefjax.workspace import Workspace

    weights = load_encoder(Workspace(ws_root), with_imagenet_head=True)
    if weights.imagenet_head is None:
        raise InvalidInput(
            "the ported weights have no ImageNet classifier (classifier.* keys), so --check "
            "cannot classify; port a full torchvision AlexNet state dict"
        )
    img, _ = resize_short_side(load_rgb(image, target_size=(256, 256)), 256)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    window = np.asarray(img.crop((left, top, left + 224, top + 224)))[None]
    fmap = make_encoder(weights.params)(window)
    probs = np.asarray(jax.nn.softmax(imagenet_logits(weights.imagenet_head, fmap)[0]))
    names = imagenet_class_names()
    best = np.argsort(-probs)[:5]
    return [(int(i), names[i] if names else None, float(probs[i])) for i in best]


def run(args: argparse.Namespace) -> int:
    from tiefjax.nets.port import port_weights
    from tiefjax.workspace import Workspace

    ws = Workspace(args.workspace)
    if args.check is not None and not args.check.is_file():  # fail before the slow part
        raise InvalidInput(f"{args.check}: image not found")
    report = port_weights(ws, args.weights)
    head = "with" if report.imagenet_head else "without"
    print(
        f"ported {report.source_file} (sha256 {report.sha256[:12]}) {head} the ImageNet head "
        f"to {report.checkpoint}"
    )
    if args.check is not None:
        print(f"ImageNet top-5 for {args.check}:")
        for index, name, prob in imagenet_top5(ws.root, args.check):
            label = name if name is not None else f"class {index}"
            print(f"  {prob:6.1%}  {label}  [{index}]")
    return 0
