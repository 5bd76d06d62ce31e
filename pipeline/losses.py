"""Training losses by config name, each built from its ``params``; ``auto`` follows the task.

A loss maps the model outputs and the batch (its ``target``) to a scalar. ``sum`` adds
weighted terms, e.g. focal + cross-entropy, and any term may use its own parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pipeline.registry import Registry

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss")

AUTO_LOSS = {"binary": "bce", "multilabel": "bce", "multiclass": "cross_entropy",
             "regression": "mse"}
CLASSIFICATION = ("binary", "multiclass", "multilabel")
LOSS_TASKS = {
    "cross_entropy": ("multiclass",), "bce": ("binary", "multilabel"),
    "focal": CLASSIFICATION, "mse": ("regression",), "l1": ("regression",),
    "huber": ("regression",),
}


def _smooth_binary(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    return target * (1 - smoothing) + 0.5 * smoothing


def _reduce(per_row: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over rows (and over columns first), weighted by ``batch["weight"]`` when present
    (pseudo-labelled rows carry their own weight)."""
    if per_row.ndim > 1:
        per_row = per_row.mean(dim=tuple(range(1, per_row.ndim)))
    weight = batch.get("weight")
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row)
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


def _class_target(target: torch.Tensor) -> torch.Tensor:
    """Class indices stay integers; soft (probability) targets stay floats."""
    return target.long() if target.ndim == 1 else target.float()


@LOSSES.register("cross_entropy")
def cross_entropy(smoothing: float = 0.0, class_weights: list[float] | None = None) -> LossFn:
    """Softmax cross-entropy on class indices or class probabilities (soft labels), with
    optional label smoothing and class weights."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = torch.tensor(class_weights, device=outputs.device) if class_weights else None
        per_row = F.cross_entropy(outputs.float(), _class_target(batch["target"]),
                                  weight=weight, label_smoothing=smoothing, reduction="none")
        return _reduce(per_row, batch)

    return loss


@LOSSES.register("bce")
def bce(smoothing: float = 0.0, pos_weight: list[float] | None = None) -> LossFn:
    """Binary cross-entropy on logits per label; smoothing pulls 0/1 targets toward 0.5."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = torch.tensor(pos_weight, device=outputs.device) if pos_weight else None
        target = _smooth_binary(batch["target"].float(), smoothing)
        per_cell = F.binary_cross_entropy_with_logits(outputs.float(), target,
                                                      pos_weight=weight, reduction="none")
        return _reduce(per_cell, batch)

    return loss


@LOSSES.register("focal")
def focal(gamma: float = 2.0, alpha: float | None = None, smoothing: float = 0.0,
          softmax: bool | None = None) -> LossFn:
    """Focal loss (Lin et al. 2017): softmax over classes (class indices or probabilities),
    sigmoid per label for 0/1 targets. ``softmax`` None decides by the task.

    ``gamma`` 0 and no ``alpha`` give plain cross-entropy / BCE.
    """

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["target"]
        logits = outputs.float()
        if softmax or (softmax is None and target.ndim == 1):
            logp = F.log_softmax(logits, dim=1)
            n = logits.shape[1]
            hard = F.one_hot(target.long(), n).float() if target.ndim == 1 else target.float()
            soft = hard * (1 - smoothing) + smoothing / n
            weight = (1 - logp.exp()).pow(gamma)
            if alpha is not None:
                weight = weight * alpha
            return _reduce(-(soft * weight * logp).sum(dim=1), batch)
        target = _smooth_binary(target.float(), smoothing)
        per_cell = sigmoid_focal_loss(logits, target, alpha=-1 if alpha is None else alpha,
                                      gamma=gamma, reduction="none")
        return _reduce(per_cell, batch)

    return loss


@LOSSES.register("mse")
def mse() -> LossFn:
    """Mean squared error."""
    return lambda outputs, batch: _reduce(
        F.mse_loss(outputs.float(), batch["target"].float(), reduction="none"), batch)


@LOSSES.register("l1")
def l1() -> LossFn:
    """Mean absolute error."""
    return lambda outputs, batch: _reduce(
        F.l1_loss(outputs.float(), batch["target"].float(), reduction="none"), batch)


@LOSSES.register("huber")
def huber(delta: float = 1.0) -> LossFn:
    """Huber loss (on standardised regression targets)."""
    return lambda outputs, batch: _reduce(
        F.huber_loss(outputs.float(), batch["target"].float(), delta=delta, reduction="none"),
        batch)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming unknown parameters of loss ``name``."""
    known = list(inspect.signature(LOSSES.get(name)).parameters)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter(s) {unknown}. Known: {known}")


def build_loss(name: str, task: str, params: dict[str, Any] | None = None,
               terms: list[tuple[str, float, dict[str, Any]]] | None = None) -> LossFn:
    """The named loss (``auto``: the task's natural one), or a weighted sum of ``terms``."""
    if terms:
        parts = [(build_loss(n, task, p), w) for n, w, p in terms]
        return lambda outputs, batch: sum(w * fn(outputs, batch) for fn, w in parts)
    resolved = AUTO_LOSS[task] if name == "auto" else name
    params = dict(params or {})
    if resolved == "focal":
        params.setdefault("softmax", task == "multiclass")
    return LOSSES.get(resolved)(**params)
