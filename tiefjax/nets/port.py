"""torchvision AlexNet weights -> Flax params, checked, and saved into a workspace with orbax.

Users bring their own ImageNet weights (``torchvision.models.alexnet(weights=...)`` saved with
``torch.save(model.state_dict(), "alexnet.pth")``, or torchvision's ``alexnet-owt-7be5be79.pth``);
nothing is downloaded. A wrong file is rejected with every problem listed at once, so a user can
see at a glance whether they picked the wrong network, a truncated file or a whole pickled model.

Layout of torchvision's AlexNet state dict::

    features.{0,3,6,8,10}.{weight,bias}   conv1..conv5, weight (out, in, kh, kw)
    classifier.{1,4,6}.{weight,bias}      fc6, fc7, fc8, weight (out, in); optional here

Flax wants HWIO conv kernels and (in, out) dense kernels. fc6 sees the 6x6x256 map flattened in
torch's (C, H, W) order, which :class:`~tiefjax.nets.alexnet.ImageNetHead` reproduces, so its
weight only needs transposing.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.nets.alexnet import CONV_LAYERS, TORCH_FEATURE_INDEX
from tiefjax.workspace import Workspace, atomic_write_text

TORCH_VERSION = "2.13.0"
ENCODER_DIR = "encoder"
HEAD_DIR = "imagenet_head"
META_NAME = "encoder.json"
#: (flax name, torch prefix, torch weight shape) of the ImageNet head.
HEAD_LAYERS: tuple[tuple[str, str, tuple[int, int]], ...] = (
    ("fc6", "classifier.1", (4096, 256 * 6 * 6)),
    ("fc7", "classifier.4", (4096, 4096)),
    ("fc8", "classifier.6", (1000, 4096)),
)
_MAX_LISTED = 12


def expected_encoder_shapes() -> dict[str, tuple[int, ...]]:
    """torch key -> shape of every encoder tensor (``features.*``), from the Flax layer table."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for (_, feats, kernel, *_), idx in zip(CONV_LAYERS, TORCH_FEATURE_INDEX, strict=True):
        shapes[f"features.{idx}.weight"] = (feats, in_ch, kernel, kernel)
        shapes[f"features.{idx}.bias"] = (feats,)
        in_ch = feats
    return shapes


def expected_head_shapes() -> dict[str, tuple[int, ...]]:
    """torch key -> shape of every ImageNet head tensor (``classifier.*``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for _, prefix, shape in HEAD_LAYERS:
        shapes[f"{prefix}.weight"] = shape
        shapes[f"{prefix}.bias"] = (shape[0],)
    return shapes


def _to_numpy(value: Any) -> np.ndarray | None:
    """A torch tensor or array-like as a NumPy array (None when it is not numeric data)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception:
        return None
    return array if array.dtype.kind in "fiu" else None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def state_dict_to_flax(sd: Mapping[str, Any], name: str = "state dict") -> dict[str, Any]:
    """Check a torchvision AlexNet state dict and convert it to Flax params.

    Returns ``{"encoder": params, "imagenet_head": params | None}``; the head is None when the
    dict has no ``classifier.*`` keys. Keys saved from ``nn.DataParallel`` (``module.`` prefix)
    are accepted. Raises :class:`InvalidInput` listing every problem found.
    """
    if not isinstance(sd, Mapping):
        raise InvalidInput(
            f"{name} is not a state dict (got {type(sd).__name__}); save the weights with "
            "torch.save(model.state_dict(), 'alexnet.pth')"
        )
    sd = {
        (k[len("module.") :] if isinstance(k, str) and k.startswith("module.") else k): v
        for k, v in sd.items()
    }
    encoder_shapes = expected_encoder_shapes()
    head_shapes = expected_head_shapes()
    has_head = any(isinstance(k, str) and k.startswith("classifier.") for k in sd)
    wanted = {**encoder_shapes, **(head_shapes if has_head else {})}

    problems: list[str] = []
    missing = [k for k in wanted if k not in sd]
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    unexpected = sorted(str(k) for k in sd if k not in wanted)
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    arrays: dict[str, np.ndarray] = {}
    bad_shapes: list[str] = []
    for key, shape in wanted.items():
        if key not in sd:
            continue
        array = _to_numpy(sd[key])
        if array is None:
            problems.append(f"{key} is not a numeric tensor ({type(sd[key]).__name__})")
        elif tuple(array.shape) != shape:
            bad_shapes.append(f"{key} has shape {tuple(array.shape)}, expected {shape}")
        elif not np.isfinite(array).all():
            problems.append(f"{key} contains NaN or infinite values")
        else:
            arrays[key] = array.astype(np.float32)
    if bad_shapes:
        problems.append("wrong shapes: " + "; ".join(bad_shapes))
    if problems:
        raise InvalidInput(
            f"{name} is not a torchvision AlexNet state dict: "
            + " | ".join(problems)
            + ". Expected the keys of torchvision.models.alexnet().state_dict()."
        )

    encoder: dict[str, dict[str, np.ndarray]] = {}
    for (flax_name, *_), idx in zip(CONV_LAYERS, TORCH_FEATURE_INDEX, strict=True):
        weight = arrays[f"features.{idx}.weight"]  # (O, I, kh, kw) -> (kh, kw, I, O)
        encoder[flax_name] = {
            "kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),
            "bias": arrays[f"features.{idx}.bias"],
        }
    head: dict[str, dict[str, np.ndarray]] | None = None
    if has_head:
        head = {
            flax_name: {
                "kernel": np.ascontiguousarray(arrays[f"{prefix}.weight"].T),  # (in, out)
                "bias": arrays[f"{prefix}.bias"],
            }
            for flax_name, prefix, _ in HEAD_LAYERS
        }
    return {"encoder": encoder, "imagenet_head": head}


def read_torch_state_dict(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Read a ``.pth`` state dict (or ``{"state_dict": ...}``) safely: key -> tensor/array.

    Uses ``torch.load(weights_only=True)``: a pickled whole model or arbitrary objects are
    refused rather than executed. ``.npz`` files with the same keys are read without torch.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFound(f"{path}: weights file not found")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as err:
            raise InvalidInput(f"{path} is not a readable .npz file ({err})") from err
    with path.open("rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):  # zip / legacy pickle
        raise InvalidInput(
            f"{path} is not a PyTorch file; give the .pth written by "
            "torch.save(model.state_dict(), 'alexnet.pth')"
        )
    try:
        import torch
    except ImportError as err:
        raise InvalidInput(
            f"reading {path.name} needs PyTorch, which is not installed: "
            f"pip install torch=={TORCH_VERSION} (it is only needed for porting), "
            "or convert the state dict to .npz with the same keys"
        ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InvalidInput(
            f"{path} holds pickled Python objects (a whole model?), not only tensors, and "
            "loading it could run code; save just the weights with "
            "torch.save(model.state_dict(), 'alexnet.pth')"
        ) from err
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise InvalidInput(
            f"{path} could not be read by PyTorch ({text[:200]}); the file may be truncated"
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise InvalidInput(
            f"{path} holds a {type(obj).__name__}, not a state dict; save the weights with "
            "torch.save(model.state_dict(), 'alexnet.pth')"
        )
    return dict(obj)


@dataclasses.dataclass(frozen=True)
class PortReport:
    """What :func:`port_weights` wrote."""

    checkpoint: Path
    imagenet_head: bool
    source_file: str
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_params(path: Path, params: Any) -> None:
    """Save a param tree with orbax so ``path`` appears only once complete.

    orbax writes into ``<path>.orbax-checkpoint-tmp-*`` and renames it when done. When ``path``
    already exists, the new checkpoint is finalised under a staging name first and then swapped
    in with renames, so a reader sees either the old or the new weights, never a mix.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = path.with_name(f".{path.name}.staging-{tag}")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(staging, params)
        ckptr.wait_until_finished()
    old = path.with_name(f".{path.name}.old-{tag}")
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(models_dir: Path) -> None:
    """Drop leftovers of interrupted saves (never picked up by a loader, but they take space)."""
    for child in models_dir.glob(".*.staging-*"):
        shutil.rmtree(child, ignore_errors=True)
    for child in models_dir.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(child, ignore_errors=True)


def port_weights(ws: Workspace, pth_path: str | os.PathLike[str]) -> PortReport:
    """Convert ``pth_path`` and save it as the workspace's encoder (and ImageNet head).

    Works on any folder (the workspace need not be initialised yet): creates ``models/``.
    """
    source = Path(pth_path).expanduser()
    params = state_dict_to_flax(read_torch_state_dict(source), name=str(source))
    models = ws.models_dir
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale(models)
    save_params(models / ENCODER_DIR, params["encoder"])
    head = params["imagenet_head"]
    if head is not None:
        save_params(models / HEAD_DIR, head)
    else:  # a head from earlier weights would not match this encoder
        shutil.rmtree(models / HEAD_DIR, ignore_errors=True)
    sha = _sha256(source)
    meta = {
        "source": "imagenet",
        "file": source.name,
        "sha256": sha,
        "imagenet_head": head is not None,
        "ported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "format": 1,
    }
    atomic_write_text(models / META_NAME, json.dumps(meta, indent=2) + "\n")
    return PortReport(models / ENCODER_DIR, head is not None, source.name, sha)
