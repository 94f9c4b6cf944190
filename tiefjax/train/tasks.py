"""The three training tasks: a loss, metrics and which params train; the loop is shared.

- ``classifier``: :class:`~tiefjax.nets.heads.CropClassifier`, softmax cross-entropy on
  foreground (1) / background (0) crops, class-balanced within each batch; metric: accuracy.
- ``regressor``: :class:`~tiefjax.nets.heads.BoxRegressors`, MSE on targets standardised with the
  training mean/std; metrics: MAE in crop pixels and mean IoU of predicted vs true box, next to
  the original's shifted-input baseline (prediction for sample ``i+3`` scored against target ``i``).
- ``ranking``: :class:`~tiefjax.nets.heads.RankingNet`, hinge on similarities
  ``max(0, margin - (s(H, H+) - s(H, H-)))`` with ``s`` the dot product of unit embeddings. (The
  seed issue writes ``max(0, margin + D(H,H+) - D(H,H-))`` with ``D`` the dot product; taken
  literally that pushes the positive *away*. The intended order — H+ more similar to H than H- by
  ``margin`` — is what the original's ``MarginRankingCriterion`` did and what we train.) Metric:
  triplet accuracy, the fraction with ``s(H,H+) > s(H,H-)``; step 0 (identity projection) is the
  unsupervised baseline.

Inputs are encoder feature maps (frozen encoder; the default) or uint8 images when the encoder is
fine-tuned, in which case ``params["encoder"]`` trains too, at its own (lower) learning rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tiefjax.errors import InvalidInput
from tiefjax.images import normalize
from tiefjax.nets.alexnet import FEATURE_CHANNELS, PATCH, AlexNetEncoder, apply_params
from tiefjax.nets.heads import BoxRegressors, CropClassifier, RankingNet
from tiefjax.settings import setting

TASKS = ("classifier", "regressor", "ranking")
#: prepared dataset each task trains on (``tiefjax.prepare.load_split``)
DATASETS = {"classifier": "classification", "regressor": "regression", "ranking": "triplets"}


def _steps(default: int) -> Any:
    """The ``steps`` setting; each task only changes its default."""
    return setting(default, "optimiser steps in total (a re-run with more steps continues)")


# -- configs ----------------------------------------------------------------------------------
# Defaults are sized for the demo catalog (~160 photos, a few thousand crops) on 2 CPU cores:
# frozen encoder, features cached once, each task trains in well under two minutes.


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every task (sections ``[train.classifier]`` etc.)."""

    steps: int = _steps(300)
    batch_size: int = setting(64, "global batch size; must be a multiple of the device count")
    learning_rate: float = setting(1e-3, "peak learning rate of the heads (AdamW)")
    encoder_learning_rate: float = setting(
        1e-5, "peak learning rate of the encoder when fine-tuned"
    )
    warmup_steps: int = setting(20, "linear warm-up steps before the cosine decay")
    end_lr_fraction: float = setting(
        0.05, "learning rate at the last step, as a fraction of the peak"
    )
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    finetune_encoder: bool = setting(False, "train the encoder too (on images, slow on CPU)")
    eval_every: int = setting(100, "evaluate on the test split every N steps (and at the end)")
    log_every: int = setting(20, "write averaged training metrics every N steps")
    checkpoint_every: int = setting(100, "save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = setting(
        1, "recent checkpoints kept (a new one is complete before the old one goes)"
    )
    seed: int = setting(0, "seed of the initial params and of the data order")
    num_threads: int = setting(2, "input pipeline threads")
    prefetch: int = setting(4, "batches prepared ahead of the device")

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """A few small steps for tests."""
        base: dict[str, Any] = dict(
            steps=30,
            batch_size=16,
            warmup_steps=3,
            eval_every=10,
            log_every=5,
            checkpoint_every=10,
            num_threads=1,
            prefetch=2,
        )
        base.update(cls._tiny_extra())
        base.update(overrides)
        return cls(**base)

    @classmethod
    def _tiny_extra(cls) -> dict[str, Any]:
        return {}

    def identity(self) -> dict[str, Any]:
        """The settings that define a run (a change starts it afresh); not steps or I/O knobs."""
        skip = {
            "steps",
            "eval_every",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "num_threads",
            "prefetch",
        }
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """Crop classifier (foreground / background)."""

    steps: int = _steps(600)
    hidden: int = setting(512, "units of the 11x11 (fully connected) layer")
    hidden2: int = setting(256, "units of the second layer")
    balance_classes: bool = setting(True, "weight each batch so both classes count equally")

    @classmethod
    def _tiny_extra(cls) -> dict[str, Any]:
        return {"hidden": 32, "hidden2": 16}


@dataclass(frozen=True)
class RegressorConfig(TrainConfig):
    """Four box-corner regressors."""

    steps: int = _steps(400)
    hidden: int = setting(
        128, "units of each regressor's 11x11 (fully connected) layer (orig. 512)"
    )
    hidden2: int = setting(64, "units of each regressor's second layer (original: 128)")
    activation: str = setting("relu", "hidden activation: relu, tanh (the original) or gelu")

    @classmethod
    def _tiny_extra(cls) -> dict[str, Any]:
        return {"hidden": 16, "hidden2": 8}


@dataclass(frozen=True)
class RankingConfig(TrainConfig):
    """Deep-ranking projection on similarity triplets."""

    steps: int = _steps(200)
    batch_size: int = setting(32, "global batch size (triplets); a multiple of the device count")
    learning_rate: float = setting(1e-4, "peak learning rate of the projection (AdamW)")
    weight_decay: float = setting(0.0, "AdamW weight decay (pulls the identity init towards zero)")
    margin: float = setting(0.1, "hinge margin on cosine similarities (embeddings are unit length)")
    mirror_triplets: bool = setting(
        False, "add (H, mirror(H), H-) for every training triplet, as the original's self-vs-mirror"
    )


CONFIGS: dict[str, type[TrainConfig]] = {
    "classifier": ClassifierConfig,
    "regressor": RegressorConfig,
    "ranking": RankingConfig,
}


def check_task(name: str) -> str:
    if name not in TASKS:
        raise InvalidInput(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return name


# -- task definition --------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """What the generic loop needs to train one head.

    ``params`` is ``{"head": ..., "encoder": ...}`` (``encoder`` only when fine-tuned).
    ``loss(params, batch) -> (scalar, {metric: scalar})`` is differentiated;
    ``predict(params, batch) -> {name: per-example array}`` runs on the test split and
    ``evaluate(outputs) -> {metric: float}`` scores the concatenated outputs on the host.
    """

    name: str
    keys: tuple[str, ...]  # batch fields the task reads
    head: Any  # the flax module of the head
    init: Callable[[jax.Array], dict[str, Any]]
    loss: Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
    predict: Callable[[Any, Mapping[str, jax.Array]], dict[str, jax.Array]]
    evaluate: Callable[[Mapping[str, np.ndarray]], dict[str, float]]
    primary: str  # the headline metric
    meta: dict[str, Any] = field(default_factory=dict)  # saved with the trained params


def encoder_features(params: Mapping[str, Any], x: jax.Array) -> jax.Array:
    """Encoder feature maps: ``x`` itself when it already is features, else encode the images."""
    if x.dtype == jnp.uint8:
        return apply_params(AlexNetEncoder(), params["encoder"], normalize(x))
    return x.astype(jnp.float32)


def _dummy_features(channels: int = FEATURE_CHANNELS) -> jax.Array:
    return jnp.zeros((1, PATCH, PATCH, channels), jnp.float32)


def _with_encoder(head_params: Any, encoder_params: Any | None) -> dict[str, Any]:
    params = {"head": head_params}
    if encoder_params is not None:
        params["encoder"] = jax.tree.map(jnp.asarray, encoder_params)
    return params


def _init_fn(
    head: Any, encoder_params: Any | None, channels: int
) -> Callable[[jax.Array], dict[str, Any]]:
    """A task's ``init(rng)``: head params for ``channels``-deep features (+ the encoder's)."""

    def init(rng: jax.Array) -> dict[str, Any]:
        return _with_encoder(head.init(rng, _dummy_features(channels))["params"], encoder_params)

    return init


def _window_output(head: Any, params: Any, images: jax.Array) -> jax.Array:
    """The head's output on one window per example (the single position of its output map)."""
    return head.apply({"params": params["head"]}, encoder_features(params, images))[:, 0, 0, :]


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with warm-up + cosine decay; the encoder (when fine-tuned) at its own lower rate."""

    def schedule(peak: float) -> optax.Schedule:
        warm = max(0, min(config.warmup_steps, config.steps - 1))
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warm else peak,
            peak_value=peak,
            warmup_steps=warm,
            decay_steps=max(config.steps, warm + 1),
            end_value=peak * config.end_lr_fraction,
        )

    head = optax.adamw(schedule(config.learning_rate), weight_decay=config.weight_decay)
    enc = optax.adamw(schedule(config.encoder_learning_rate), weight_decay=config.weight_decay)
    return optax.multi_transform(
        {"head": head, "encoder": enc},
        lambda params: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()},
    )


# -- classifier -------------------------------------------------------------------------------


def classifier_task(
    config: ClassifierConfig, encoder_params: Any | None = None, channels: int = FEATURE_CHANNELS
) -> Task:
    head = CropClassifier(hidden=config.hidden, hidden2=config.hidden2)

    init = _init_fn(head, encoder_params, channels)

    def loss(params: Any, batch: Mapping[str, jax.Array]):
        logits = _window_output(head, params, batch["image"])
        labels = batch["label"].astype(jnp.int32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if config.balance_classes:
            # each class present in the batch contributes half of the loss
            fg = (labels == 1).astype(jnp.float32)
            n_fg, n_bg = fg.sum(), (1 - fg).sum()
            w = fg / jnp.maximum(n_fg, 1.0) + (1 - fg) / jnp.maximum(n_bg, 1.0)
            value = jnp.sum(w * ce) / jnp.sum(w)
        else:
            value = ce.mean()
        acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return value, {"loss": value, "accuracy": acc}

    def predict(params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        logits = _window_output(head, params, batch["image"])
        return {"logits": logits, "label": batch["label"].astype(jnp.int32)}

    def evaluate(out: Mapping[str, np.ndarray]) -> dict[str, float]:
        logits, labels = out["logits"].astype(np.float64), out["label"]
        logp = logits - np.logaddexp(logits[:, 0], logits[:, 1])[:, None]
        pred = logits.argmax(-1)
        recall = [
            float((pred[labels == c] == c).mean()) if (labels == c).any() else 1.0 for c in (0, 1)
        ]
        return {
            "loss": float(-logp[np.arange(len(labels)), labels].mean()),
            "accuracy": float((pred == labels).mean()),
            "balanced_accuracy": float(np.mean(recall)),
            "foreground_recall": recall[1],
            "background_recall": recall[0],
            "chance": float(max(labels.mean(), 1 - labels.mean())),
            "n": len(labels),
        }

    return Task(
        "classifier",
        ("image", "label"),
        head,
        init,
        loss,
        predict,
        evaluate,
        "accuracy",
        meta={"hidden": config.hidden, "hidden2": config.hidden2},
    )


# -- regressor --------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (left, top, right, bottom) boxes, row by row (empty/inverted boxes have area 0)."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih

    def area(x: np.ndarray) -> np.ndarray:
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def regressor_task(
    config: RegressorConfig,
    mean: np.ndarray,
    std: np.ndarray,
    encoder_params: Any | None = None,
    channels: int = FEATURE_CHANNELS,
) -> Task:
    mean = np.asarray(mean, np.float32).reshape(4)
    std = np.asarray(std, np.float32).reshape(4)
    if not np.all(np.isfinite(mean)) or not np.all(std > 0):
        raise InvalidInput(f"regression stats must be finite with std > 0, got {mean}, {std}")
    head = BoxRegressors(hidden=config.hidden, hidden2=config.hidden2, activation=config.activation)

    init = _init_fn(head, encoder_params, channels)

    def loss(params: Any, batch: Mapping[str, jax.Array]):
        pred = _window_output(head, params, batch["image"])
        target = (batch["target"].astype(jnp.float32) - mean) / std
        value = jnp.mean(jnp.square(pred - target))
        mae = jnp.mean(jnp.abs(pred - target) * std)
        return value, {"loss": value, "mae_px": mae}

    def predict(params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        pred = _window_output(head, params, batch["image"])
        return {"pred": pred, "target": batch["target"].astype(jnp.float32)}

    def evaluate(out: Mapping[str, np.ndarray]) -> dict[str, float]:
        target = out["target"].astype(np.float64)
        box = out["pred"].astype(np.float64) * std + mean
        shifted = np.roll(box, -3, axis=0)  # prediction for sample i+3 vs target i
        mean_box = np.broadcast_to(mean, target.shape)
        err = np.abs(box - target)
        return {
            "loss": float(np.mean(np.square((box - target) / std))),
            "mae_px": float(err.mean()),
            **{
                f"mae_px_{n}": float(e)
                for n, e in zip(("left", "top", "right", "bottom"), err.mean(0), strict=True)
            },
            "iou": float(box_iou(box, target).mean()),
            "baseline_mae_px": float(np.abs(shifted - target).mean()),
            "baseline_iou": float(box_iou(shifted, target).mean()),
            "mean_box_iou": float(box_iou(mean_box, target).mean()),
            "n": len(target),
        }

    return Task(
        "regressor",
        ("image", "target"),
        head,
        init,
        loss,
        predict,
        evaluate,
        "iou",
        meta={
            "hidden": config.hidden,
            "hidden2": config.hidden2,
            "activation": config.activation,
            "mean": mean.tolist(),
            "std": std.tolist(),
        },
    )


# -- ranking ----------------------------------------------------------------------------------


def ranking_task(
    config: RankingConfig, encoder_params: Any | None = None, channels: int = FEATURE_CHANNELS
) -> Task:
    head = RankingNet(channels=channels)

    init = _init_fn(head, encoder_params, channels)

    def sims(params: Any, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        b = batch["reference"].shape[0]
        x = jnp.concatenate([batch["reference"], batch["positive"], batch["negative"]])
        emb = apply_params(head, params["head"], encoder_features(params, x))
        ref, pos, neg = emb[:b], emb[b : 2 * b], emb[2 * b :]
        return jnp.sum(ref * pos, -1), jnp.sum(ref * neg, -1)

    def loss(params: Any, batch: Mapping[str, jax.Array]):
        s_pos, s_neg = sims(params, batch)
        value = jnp.mean(jax.nn.relu(config.margin - (s_pos - s_neg)))
        acc = jnp.mean((s_pos > s_neg).astype(jnp.float32))
        return value, {"loss": value, "accuracy": acc}

    def predict(params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        s_pos, s_neg = sims(params, batch)
        return {"s_pos": s_pos, "s_neg": s_neg}

    def evaluate(out: Mapping[str, np.ndarray]) -> dict[str, float]:
        gap = out["s_pos"].astype(np.float64) - out["s_neg"]
        return {
            "loss": float(np.maximum(0.0, config.margin - gap).mean()),
            "accuracy": float((gap > 0).mean()),
            "mean_gap": float(gap.mean()),
            "chance": 0.5,
            "n": len(gap),
        }

    return Task(
        "ranking",
        ("reference", "positive", "negative"),
        head,
        init,
        loss,
        predict,
        evaluate,
        "accuracy",
        meta={"channels": channels, "margin": config.margin},
    )


def make_task(
    name: str,
    config: TrainConfig,
    *,
    encoder_params: Any | None = None,
    regression_stats: tuple[np.ndarray, np.ndarray] | None = None,
    channels: int = FEATURE_CHANNELS,
) -> Task:
    """The task ``name`` for ``config``; ``encoder_params`` only when the encoder trains too."""
    check_task(name)
    if name == "classifier":
        assert isinstance(config, ClassifierConfig)
        return classifier_task(config, encoder_params, channels)
    if name == "regressor":
        assert isinstance(config, RegressorConfig)
        if regression_stats is None:
            raise InvalidInput("the regressor needs the training targets' mean and std")
        return regressor_task(config, *regression_stats, encoder_params, channels)
    assert isinstance(config, RankingConfig)
    return ranking_task(config, encoder_params, channels)


def head_module(name: str, meta: Mapping[str, Any]) -> Any:
    """Rebuild a trained head's flax module from its saved ``meta``."""
    check_task(name)
    if name == "classifier":
        return CropClassifier(hidden=meta["hidden"], hidden2=meta["hidden2"])
    if name == "regressor":
        return BoxRegressors(
            hidden=meta["hidden"], hidden2=meta["hidden2"], activation=meta["activation"]
        )
    return RankingNet(channels=meta.get("channels", FEATURE_CHANNELS))
