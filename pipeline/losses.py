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


@LOSSES.register("cross_entropy")
def cross_entropy(smoothing: float = 0.0, class_weights: list[float] | None = None) -> LossFn:
    """Softmax cross-entropy on class indices, with optional label smoothing and class weights."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = torch.tensor(class_weights, device=outputs.device) if class_weights else None
        return F.cross_entropy(outputs.float(), batch["target"].long(), weight=weight,
                               label_smoothing=smoothing)

    return loss


@LOSSES.register("bce")
def bce(smoothing: float = 0.0, pos_weight: list[float] | None = None) -> LossFn:
    """Binary cross-entropy on logits per label; smoothing pulls 0/1 targets toward 0.5."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = torch.tensor(pos_weight, device=outputs.device) if pos_weight else None
        target = _smooth_binary(batch["target"].float(), smoothing)
        return F.binary_cross_entropy_with_logits(outputs.float(), target, pos_weight=weight)

    return loss


@LOSSES.register("focal")
def focal(gamma: float = 2.0, alpha: float | None = None, smoothing: float = 0.0) -> LossFn:
    """Focal loss (Lin et al. 2017): softmax for class indices, sigmoid for 0/1 targets.

    ``gamma`` 0 and no ``alpha`` give plain cross-entropy / BCE.
    """

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["target"]
        logits = outputs.float()
        if target.ndim == 1:  # class indices: softmax focal
            logp = F.log_softmax(logits, dim=1)
            n = logits.shape[1]
            soft = F.one_hot(target.long(), n).float() * (1 - smoothing) + smoothing / n
            p = logp.exp()
            weight = (1 - p).pow(gamma)
            if alpha is not None:
                weight = weight * alpha
            return -(soft * weight * logp).sum(dim=1).mean()
        target = _smooth_binary(target.float(), smoothing)
        return sigmoid_focal_loss(logits, target, alpha=-1 if alpha is None else alpha,
                                  gamma=gamma, reduction="mean")

    return loss


@LOSSES.register("mse")
def mse() -> LossFn:
    """Mean squared error."""
    return lambda outputs, batch: F.mse_loss(outputs.float(), batch["target"].float())


@LOSSES.register("l1")
def l1() -> LossFn:
    """Mean absolute error."""
    return lambda outputs, batch: F.l1_loss(outputs.float(), batch["target"].float())


@LOSSES.register("huber")
def huber(delta: float = 1.0) -> LossFn:
    """Huber loss (on standardised regression targets)."""
    return lambda outputs, batch: F.huber_loss(outputs.float(), batch["target"].float(),
                                               delta=delta)


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
    return LOSSES.get(resolved)(**(params or {}))
