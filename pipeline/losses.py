"""Training losses by config name; ``auto`` follows the task."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.registry import Registry

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")

AUTO_LOSS = {"binary": "bce", "multilabel": "bce", "multiclass": "cross_entropy",
             "regression": "mse"}


@LOSSES.register("cross_entropy")
def cross_entropy(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Softmax cross-entropy on class indices."""
    return F.cross_entropy(outputs.float(), batch["target"].long())


@LOSSES.register("bce")
def bce(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Binary cross-entropy on logits, one column per label."""
    return F.binary_cross_entropy_with_logits(outputs.float(), batch["target"].float())


@LOSSES.register("mse")
def mse(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean squared error."""
    return F.mse_loss(outputs.float(), batch["target"].float())


@LOSSES.register("l1")
def l1(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean absolute error."""
    return F.l1_loss(outputs.float(), batch["target"].float())


@LOSSES.register("huber")
def huber(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Huber loss with delta 1 (on standardised targets)."""
    return F.huber_loss(outputs.float(), batch["target"].float())

LOSS_TASKS = {"cross_entropy": ("multiclass",), "bce": ("binary", "multilabel"),
              "mse": ("regression",), "l1": ("regression",), "huber": ("regression",)}


def build_loss(name: str, task: str) -> LossFn:
    """The named loss; ``auto`` picks the task's natural loss."""
    return LOSSES.get(AUTO_LOSS[task] if name == "auto" else name)
