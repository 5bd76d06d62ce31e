"""Auxiliary metric-learning losses on the model's pooled features: supervised contrastive
(Khosla et al. 2020) and triplet loss with batch-hard mining (Hermans et al. 2017).

They are added to the task loss with a weight (``train.aux_losses``) and read the features of
the forward pass that produced the outputs (``CompetitionModel.features``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.data.datasets import Batch
from pipeline.registry import Registry
from pipeline.schema import Section

AUX_LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("auxiliary loss")


def _class_ids(target: torch.Tensor) -> torch.Tensor:
    """Class per row: indices as they are, one-hot/soft rows by argmax, binary by 0.5."""
    if target.ndim == 1:
        return target.long()
    if target.shape[1] == 1:
        return (target[:, 0] >= 0.5).long()
    return target.argmax(dim=1)


@AUX_LOSSES.register("supcon")
def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor,
                           temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss over L2-normalised features; rows without a positive
    in the batch are left out."""
    z = F.normalize(features.float(), dim=1)
    n = len(z)
    logits = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(dim=1)
    has = count > 0
    if not has.any():
        return features.sum() * 0.0
    mean_pos = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has] / count[has]
    return -mean_pos.mean()


@AUX_LOSSES.register("triplet")
def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor,
                       margin: float = 0.3) -> torch.Tensor:
    """Triplet loss with batch-hard mining: for each anchor, its farthest positive and its
    nearest negative (Euclidean); anchors without both are left out."""
    x = features.float()
    dist = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if not valid.any():
        return features.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(~neg_mask, float("inf")).min(dim=1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class AuxLossConfig(Section):
    """An auxiliary loss on the pooled features: ``supcon`` (temperature) or ``triplet``
    (margin, batch-hard mining), added to the task loss with ``weight``."""

    name: str  # a name in AUX_LOSSES
    weight: float = Field(0.1, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in AUX_LOSSES:
            raise ValueError(AUX_LOSSES.unknown_message(name))
        return name

    @model_validator(mode="after")
    def _check(self) -> AuxLossConfig:
        # every parameter of the loss after (features, labels) may be set
        known = list(inspect.signature(AUX_LOSSES.get(self.name)).parameters)[2:]
        unknown = sorted(set(self.params) - set(known))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no parameter(s) {unknown}. "
                             f"Known: {sorted(known)}")
        return self


def with_aux_losses(
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor], model: nn.Module,
    terms: list[tuple[str, float, dict[str, Any]]],
) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    """``loss_fn`` plus weighted auxiliary losses on ``model.features`` of the same pass."""
    if not terms:
        return loss_fn
    parts = [(AUX_LOSSES.get(name), weight, params) for name, weight, params in terms]

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total = loss_fn(outputs, batch)
        labels = _class_ids(batch["target"])
        features = model.features  # type: ignore[union-attr]
        for fn, weight, params in parts:
            total = total + weight * fn(features, labels, **params)
        return total

    loss.main = loss_fn  # type: ignore[attr-defined]  # validation scores the main loss alone
    return loss
