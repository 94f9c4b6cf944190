"""train(ws, task) on a tiny demo workspace, load_trained, and the `tiefjax train` command."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _prepared import prepared_workspace

from tiefjax.cli import main
from tiefjax.errors import InvalidInput
from tiefjax.train.artifacts import load_trained, train
from tiefjax.train.tasks import ClassifierConfig, RankingConfig, RegressorConfig


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return prepared_workspace(tmp_path_factory.mktemp("train"))


def test_train_load_and_resume(ws):
    assert load_trained(ws, "classifier") is None
    cfg = ClassifierConfig.tiny(steps=4, batch_size=8)
    report = train(ws, "classifier", cfg, progress=False)
    assert report.step == 4 and report.resumed_from == 0 and report.encode_seconds > 0
    assert {"accuracy", "loss"} <= report.metrics.keys() and "accuracy" in report.baseline
    assert "classifier: step 4" in report.summary()

    trained = load_trained(ws, "classifier")
    assert trained is not None and trained.encoder_params is None
    # restored onto the device, not as NumPy arrays that every jitted call would copy again
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(trained.params))
    assert trained.meta["step"] == 4 and trained.meta["hidden"] == cfg.hidden
    logits = trained.head.apply({"params": trained.params}, jnp.zeros((1, 13, 12, 256)))
    assert logits.shape == (1, 3, 2, 2)

    again = train(ws, "classifier", cfg, progress=False)  # nothing left to do: same params
    assert again.resumed_from == 4 and again.encode_seconds < report.encode_seconds
    same = load_trained(ws, "classifier")
    for a, b in zip(
        np.asarray(trained.params["fc1"]["kernel"]).ravel()[:100],
        np.asarray(same.params["fc1"]["kernel"]).ravel()[:100],
        strict=True,
    ):
        assert a == b


def test_regressor_meta_has_stats(ws):
    train(ws, "regressor", RegressorConfig.tiny(steps=2, batch_size=8), progress=False)
    trained = load_trained(ws, "regressor")
    assert len(trained.meta["mean"]) == 4 and len(trained.meta["std"]) == 4
    assert trained.head.apply({"params": trained.params}, jnp.zeros((2, 11, 11, 256))).shape == (
        2,
        1,
        1,
        4,
    )


def test_overrides_and_errors(ws):
    with pytest.raises(InvalidInput, match="unknown training setting"):
        train(ws, "ranking", RankingConfig.tiny(), colour="red")
    with pytest.raises(InvalidInput, match="unknown task"):
        train(ws, "detector")


def test_cli_train_ranking_json(ws, capsys):
    (ws.root / "tiefjax.toml").write_text(
        "[train.ranking]\nsteps = 2\nbatch_size = 4\neval_every = 1\ncheckpoint_every = 1\n"
    )
    assert main(["train", str(ws.root), "ranking", "--steps", "3", "--json", "--reset"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "ranking" and out["step"] == 3
    assert "accuracy" in out["metrics"] and "accuracy" in out["baseline"]
    assert load_trained(ws, "ranking").meta["config"]["batch_size"] == 4
    assert main(["train", str(ws.root), "ranking", "--batch-size", "0"]) == 2
