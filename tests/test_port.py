"""torchvision AlexNet state dict -> Flax: same numbers, bad files rejected, atomic checkpoints."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.models import imagenet_logits, load_encoder
from tiefjax.nets.alexnet import AlexNetEncoder, feature_size
from tiefjax.nets.port import (
    expected_encoder_shapes,
    port_weights,
    read_torch_state_dict,
    state_dict_to_flax,
)
from tiefjax.workspace import Workspace

torch = pytest.importorskip("torch")
nn = torch.nn


def torchvision_alexnet(seed: int = 0) -> nn.Module:
    """Exactly torchvision.models.AlexNet's modules (same state-dict keys), random weights."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(p=0.5),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, 1000),
    )
    return model.eval()


def torch_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = model.avgpool(model.features(x))
    return model.classifier(torch.flatten(f, 1))


def tiefvision_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torch features with TiefVision's last max-pool stride 1, NCHW."""
    return nn.MaxPool2d(kernel_size=3, stride=1)(model.features[:12](x))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return torchvision_alexnet()


@pytest.fixture(scope="module")
def state_dict(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def ported(state_dict: dict[str, np.ndarray]) -> dict:
    return state_dict_to_flax(state_dict)


@pytest.mark.parametrize("hw", [(224, 224), (320, 448)])
def test_feature_map_equals_torch(model, ported, hw):
    rng = np.random.default_rng(hw[1])
    x = rng.normal(size=(2, 3, *hw)).astype(np.float32)
    with torch.inference_mode():
        want = tiefvision_map(model, torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
        torchvision_out = model.features(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(AlexNetEncoder().apply({"params": ported["encoder"]}, x.transpose(0, 2, 3, 1)))
    assert got.shape == want.shape == (2, feature_size(hw[0]), feature_size(hw[1]), 256)
    assert rel_err(got, want) <= 1e-4
    # the stride-2 pool of torchvision is our stride-1 map subsampled by 2
    assert got[:, ::2, ::2].shape == torchvision_out.shape
    assert rel_err(got[:, ::2, ::2], torchvision_out) <= 1e-4


def test_imagenet_head_equals_torch(model, ported):
    x = np.random.default_rng(1).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        want = torch_logits(model, torch.from_numpy(x)).numpy()
    fmap = AlexNetEncoder().apply({"params": ported["encoder"]}, x.transpose(0, 2, 3, 1))
    got = np.asarray(imagenet_logits(ported["imagenet_head"], fmap))
    assert got.shape == want.shape == (2, 1000)
    assert rel_err(got, want) <= 1e-4


def test_torch_tensors_and_prefixes_accepted(model):
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if k.startswith("features.")}
    out = state_dict_to_flax(sd)
    assert out["imagenet_head"] is None
    assert out["encoder"]["conv1"]["kernel"].shape == (11, 11, 3, 64)


def test_bad_state_dicts_list_every_problem(state_dict):
    with pytest.raises(InvalidInput, match="not a state dict"):
        state_dict_to_flax([1, 2, 3])  # type: ignore[arg-type]
    sd = dict(state_dict)
    del sd["features.0.weight"], sd["classifier.6.bias"]
    sd["features.3.weight"] = np.zeros((192, 64, 3, 3), np.float32)
    sd["features.13.weight"] = np.zeros(3, np.float32)
    sd["fc.weight"] = np.zeros(3, np.float32)
    with pytest.raises(InvalidInput) as err:
        state_dict_to_flax(sd)
    msg = str(err.value)
    for part in (
        "features.0.weight",
        "classifier.6.bias",
        "features.3.weight has shape (192, 64, 3, 3), expected (192, 64, 5, 5)",
        "features.13.weight",
        "fc.weight",
    ):
        assert part in msg
    # a resnet-ish dict: nothing matches
    with pytest.raises(InvalidInput, match="missing keys: features.0.weight"):
        state_dict_to_flax({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    nan = {k: v for k, v in state_dict.items() if k.startswith("features.")}
    nan["features.10.bias"] = np.full(256, np.nan, np.float32)
    with pytest.raises(InvalidInput, match="features.10.bias contains NaN"):
        state_dict_to_flax(nan)


def test_read_torch_state_dict(tmp_path, model):
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("plain.pth", "wrapped.pth"):
        got = read_torch_state_dict(tmp_path / name)
        assert set(got) == set(expected_encoder_shapes())
    torch.save(model.features, tmp_path / "module.pth")  # a pickled module: refused
    with pytest.raises(InvalidInput, match="whole model"):
        read_torch_state_dict(tmp_path / "module.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(InvalidInput, match="not a state dict"):
        read_torch_state_dict(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(InvalidInput, match="junk.pth is not a PyTorch file"):
        read_torch_state_dict(tmp_path / "junk.pth")
    data = (tmp_path / "plain.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput, match="cut.pth"):
        read_torch_state_dict(tmp_path / "cut.pth")
    with pytest.raises(NotFound):
        read_torch_state_dict(tmp_path / "absent.pth")
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in sd.items()})
    assert set(read_torch_state_dict(tmp_path / "w.npz")) == set(sd)


def test_missing_torch_is_explained(tmp_path, monkeypatch):
    import builtins

    (tmp_path / "a.pth").write_bytes(b"PK\x03\x04 zip data")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(InvalidInput, match="pip install torch==2.13.0"):
        read_torch_state_dict(tmp_path / "a.pth")


def _same_tree(a, b) -> bool:
    la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    return [p for p, _ in la] == [p for p, _ in lb] and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for (_, x), (_, y) in zip(la, lb, strict=True)
    )


def test_orbax_round_trip_and_report(tmp_path, model, ported):
    pth = tmp_path / "alexnet.pth"
    torch.save(model.state_dict(), pth)
    ws = Workspace(tmp_path / "not-a-catalog-yet")
    report = port_weights(ws, pth)
    assert report.imagenet_head and report.checkpoint == ws.models_dir / "encoder"
    meta = json.loads((ws.models_dir / "encoder.json").read_text())
    assert meta["source"] == "imagenet" and meta["imagenet_head"] is True
    weights = load_encoder(ws, with_imagenet_head=True)
    assert weights.source == "imagenet"
    leaves = jax.tree.leaves((weights.params, weights.imagenet_head))
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)  # on the device, not NumPy
    assert _same_tree(weights.params, ported["encoder"])
    assert _same_tree(weights.imagenet_head, ported["imagenet_head"])
    # re-porting encoder-only weights replaces both and drops the stale head
    torch.save({k: v for k, v in model.state_dict().items() if "features" in k}, pth)
    assert not port_weights(ws, pth).imagenet_head
    assert load_encoder(ws, with_imagenet_head=True).imagenet_head is None
    assert sorted(p.name for p in ws.models_dir.iterdir()) == ["encoder", "encoder.json"]


def test_unfinalized_checkpoint_is_never_picked_up(tmp_path, ported, capsys):
    from tiefjax.nets.port import save_params

    ws = Workspace(tmp_path)
    # what orbax leaves behind when a save dies half-way: a tmp folder, never renamed
    save_params(tmp_path / "full", ported["encoder"])
    tmp = ws.models_dir / "encoder.orbax-checkpoint-tmp-1234567"
    tmp.parent.mkdir(parents=True)
    (tmp_path / "full").rename(tmp)
    for f in list(tmp.rglob("*"))[:3]:
        if f.is_file():
            f.write_bytes(b"")  # and some of it half-written
    weights = load_encoder(ws)
    assert weights.source == "random"
    assert "without ImageNet weights" in capsys.readouterr().err


def test_interrupted_re_port_keeps_old_weights(tmp_path, model, ported, monkeypatch):
    from pathlib import Path

    pth = tmp_path / "alexnet.pth"
    torch.save({k: v for k, v in model.state_dict().items() if "features" in k}, pth)
    ws = Workspace(tmp_path / "ws")
    port_weights(ws, pth)
    other = torchvision_alexnet(seed=1)
    torch.save({k: v for k, v in other.state_dict().items() if "features" in k}, pth)

    def crash(self, target):
        raise KeyboardInterrupt  # killed after the new checkpoint was written, before the swap

    monkeypatch.setattr(Path, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        port_weights(ws, pth)
    monkeypatch.undo()
    assert any(".staging-" in p.name for p in ws.models_dir.iterdir())
    assert _same_tree(load_encoder(ws).params, ported["encoder"])  # old weights, whole
    port_weights(ws, pth)  # a re-run finishes and cleans up
    assert not _same_tree(load_encoder(ws).params, ported["encoder"])
    assert sorted(p.name for p in ws.models_dir.iterdir()) == ["encoder", "encoder.json"]


def test_port_command(tmp_path, model, capsys):
    from PIL import Image

    from tiefjax.cli import main
    from tiefjax.commands.port import imagenet_class_names

    names = imagenet_class_names()
    assert names is not None and names[281].startswith("tabby") and len(names) == 1000
    pth = tmp_path / "alexnet.pth"
    torch.save(model.state_dict(), pth)
    img = tmp_path / "cat.jpg"
    Image.new("RGB", (300, 260), (200, 120, 40)).save(img)
    assert main(["port", str(tmp_path / "ws"), str(pth), "--check", str(img)]) == 0
    out = capsys.readouterr().out
    assert "with the ImageNet head" in out and "top-5" in out
    assert len([line for line in out.splitlines() if line.endswith("]")]) == 5
    (tmp_path / "bad.pth").write_bytes(b"junk")
    assert main(["port", str(tmp_path / "ws"), str(tmp_path / "bad.pth")]) == 2
    assert "bad.pth" in capsys.readouterr().err


def test_foreign_checkpoint_is_rejected_clearly(tmp_path):
    from tiefjax.nets.port import save_params

    ws = Workspace(tmp_path)
    save_params(ws.models_dir / "encoder", {"conv1": {"kernel": np.zeros((3, 3), np.float32)}})
    with pytest.raises(InvalidInput, match="tiefjax port"):
        load_encoder(ws)
