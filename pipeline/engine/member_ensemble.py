"""Ensembles trained to differ: M copies of the configured network trained jointly on a fold,
with a penalty that pushes them apart while they learn (``train.ensemble``).

- ``ncl``: negative correlation learning (Liu and Yao 1999). Member ``i``'s loss adds
  ``-lambda * (f_i - f_mean)^2``, rewarding its deviation from the ensemble mean. For
  regression ``f`` is the (standardised) output: with the MSE loss and ``lambda = 1`` the sum
  over members is exactly ``M * (f_mean - y)^2`` (the ambiguity decomposition), i.e. the
  ensemble trained as one model; 0 is independent training. For classification ``f`` is the
  probability vector, not the logits: probabilities are what the run averages, and their
  deviation is bounded, whereas rewarding the deviation of logits (unbounded) lets the members
  run apart without limit and outgrow the cross-entropy that holds them.
- ``weight_repulsion``: ``lambda`` times the members' mean pairwise similarity: of their pooled
  features on the batch (linear CKA, Kornblith et al. 2019: invariant to rotations and
  scaling of the feature space, so two members that compute the same features in another
  basis count as alike), or of their weights (squared cosine per weight tensor; only
  meaningful where the members start alike, e.g. from the same pretrained encoder).
- ``independent``: the same members with no penalty, the baseline.

The members are summed, not averaged, in the training loss, so each member gets the gradient it
would get alone and the optimizer's step sizes keep their meaning. Validation and the
``oof.parquet`` of a fold read the members' mean prediction; the predict job writes every
member's own predictions beside it (``member<m>_oof.parquet``), which the train stage
gathers into ``seed<s>/member<m>/`` run folders for the blend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from torch import nn

from pipeline.data.datasets import Batch
from pipeline.engine.losses import LossFn
from pipeline.schema import Section
from pipeline.task_outputs import probabilities

Member = TypeVar("Member", bound=nn.Module)
# defaults when 'lambda' is left out; see the README's "Ensembles trained to differ"
DEFAULT_LAMBDA = {"ncl": 0.5, "weight_repulsion": 0.1, "independent": 0.0}


class EnsembleConfig(Section):
    """``train.ensemble``: ``members`` copies of the network trained jointly on each fold."""

    model_config = ConfigDict(serialize_by_alias=True)  # config.yaml says 'lambda'

    members: int = Field(3, ge=1, le=64)
    method: Literal["ncl", "weight_repulsion", "independent"] = "independent"
    lam: float | None = Field(None, alias="lambda", ge=0)
    # weight_repulsion only: what is kept apart (default: features)
    repel: Literal["features", "weights"] | None = None

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        lam = self.lam
        if self.method == "independent" and lam:
            raise ValueError("'train.ensemble.lambda' must be 0 (or left out) with method "
                             f"'independent'. Got {lam}.")
        if self.method == "ncl" and lam is not None and lam > 1:
            # beyond 1 the reward for disagreeing outweighs the fit: the members are paid to
            # be wrong in opposite directions (unbounded below for regression)
            raise ValueError(f"'train.ensemble.lambda' of method 'ncl' must be in [0, 1]. "
                             f"Got {lam}.")
        if self.repel is not None and self.method != "weight_repulsion":
            raise ValueError("'train.ensemble.repel' applies to method 'weight_repulsion' "
                             f"only. Got method {self.method!r}.")
        return self

    @property
    def strength(self) -> float:
        """``lambda``, or the method's default."""
        return DEFAULT_LAMBDA[self.method] if self.lam is None else self.lam

    @property
    def space(self) -> str:
        """What ``weight_repulsion`` keeps apart: features or weights."""
        return self.repel or "features"


def single_member_is_plain(ensemble: EnsembleConfig | None) -> EnsembleConfig | None:
    """A one-member ensemble is the plain network: dropped, so its config hash, weights and
    predictions are the same as a run without the key."""
    return None if ensemble is None or ensemble.members == 1 else ensemble


class MemberEnsemble(nn.Module):
    """M members on the same batch. In training (and with ``stacked``) the forward returns
    their outputs stacked as (rows, M, outputs), which :func:`ensemble_loss` reads; in eval
    mode it returns the mean prediction in the task's output space (the logit of the mean
    probability; the mean value for regression), so validation, EMA, SWA and precise BN see
    a plain model."""

    def __init__(self, members: list[nn.Module], task: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.task = task
        self.stacked = False  # the predict job sets it to read every member

    def forward(self, batch: Batch) -> torch.Tensor:
        outputs = torch.stack([member(batch) for member in self.members], dim=1)
        if self.training or self.stacked:
            return outputs
        return combine(outputs, self.task)


def combine(stacked: torch.Tensor, task: str) -> torch.Tensor:
    """(rows, M, outputs) -> (rows, outputs): outputs whose probabilities are the members'
    mean probabilities, computed in log space (exact, no overflow)."""
    x, log_m = stacked.float(), math.log(stacked.shape[1])
    if task == "multiclass":  # log of the mean softmax: softmax of it is the mean
        return torch.logsumexp(x.log_softmax(dim=2), dim=1) - log_m
    if task in ("binary", "multilabel"):  # logit of the mean sigmoid
        pos = torch.logsumexp(nn.functional.logsigmoid(x), dim=1)
        neg = torch.logsumexp(nn.functional.logsigmoid(-x), dim=1)
        return pos - neg
    return x.mean(dim=1)


def build_members(build: Callable[[], Member], ensemble: EnsembleConfig | None, task: str,
                  seed: int) -> Member | MemberEnsemble:
    """``build()`` alone without an ensemble; else M of them in a :class:`MemberEnsemble`.

    Member 0 is built from the global random stream, as the single network is; member ``m``
    from its own seed (``seed`` plus an offset per member) in a forked stream, so the training
    run's later draws (dropout, augmentation) do not depend on M.
    """
    first = build()
    if ensemble is None or ensemble.members == 1:
        return first
    members: list[nn.Module] = [first]
    for m in range(1, ensemble.members):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 7919 + 104729 * m)
            members.append(build())
    return MemberEnsemble(members, task)


def member_paths(model: nn.Module, paths: list[str]) -> list[str]:
    """Module paths of the config (``encoders.0``) inside every member of an ensemble."""
    if not isinstance(model, MemberEnsemble):
        return paths
    return [f"members.{m}.{p}" for m in range(len(model.members)) for p in paths]


def member_groups(model: nn.Module,
                  groups: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``groups(model)``, or the parameter groups of every member in turn (each keeps its
    encoders' own learning rates and layer decay)."""
    if not isinstance(model, MemberEnsemble):
        return groups(model)
    return [g for member in model.members for g in groups(member)]


def ensemble_loss(model: nn.Module, ensemble: EnsembleConfig | None,
                  member_loss: Callable[[nn.Module], LossFn]) -> LossFn:
    """The training loss: ``member_loss(model)`` for a plain network; for an ensemble the sum
    of each member's loss (with its own auxiliary losses) plus the diversity penalty. Its
    ``main`` (the validation loss) is the task loss of the members' mean prediction."""
    if not isinstance(model, MemberEnsemble) or ensemble is None:
        return member_loss(model)
    losses = [member_loss(member) for member in model.members]
    main: LossFn = getattr(losses[0], "main", losses[0])
    method, lam = ensemble.method, ensemble.strength
    task = model.task

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total = sum((fn(outputs[:, m], batch) for m, fn in enumerate(losses)),
                    start=outputs.new_zeros((), dtype=torch.float32))
        if lam == 0 or method == "independent":
            return total
        if method == "ncl":
            return total - lam * ncl_reward(outputs, task, batch.get("weight"))
        if ensemble.space == "weights":
            return total + lam * len(losses) * weight_similarity(model)
        return total + lam * len(losses) * feature_similarity(model)

    loss.main = main  # type: ignore[attr-defined]
    return loss


def ncl_reward(stacked: torch.Tensor, task: str, weight: torch.Tensor | None) -> torch.Tensor:
    """Sum over members of their mean squared deviation from the ensemble mean, on the task's
    output scale (probabilities summed over classes for multiclass, as the Brier score is;
    averaged over columns otherwise, as BCE and MSE are), rows weighted like the loss.

    The gradient through the mean can be left in: sum_i (f_i - mean) = 0, so it equals the
    gradient with the mean held fixed, which is Liu and Yao's update."""
    n, m = stacked.shape[:2]
    values = probabilities(task, stacked.reshape(n * m, -1)).reshape(n, m, -1)
    deviation = (values - values.mean(dim=1, keepdim=True)) ** 2
    per_row = deviation.sum(dim=2) if task == "multiclass" else deviation.mean(dim=2)
    per_row = per_row.sum(dim=1)  # summed over members, like their losses
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row)
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of two feature matrices over the same rows, in [0, 1]."""
    x = x.float() - x.float().mean(dim=0, keepdim=True)
    y = y.float() - y.float().mean(dim=0, keepdim=True)
    cross = (x.T @ y).pow(2).sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return cross / norm.clamp(min=1e-12)


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def feature_similarity(model: MemberEnsemble) -> torch.Tensor:
    """Mean linear CKA over member pairs of the pooled features of the last forward pass."""
    features = [getattr(member, "features", None) for member in model.members]
    if any(f is None for f in features):
        raise RuntimeError("weight_repulsion on features needs members that keep their "
                           "pooled features (CompetitionModel.features)")
    sims = [linear_cka(features[i], features[j])  # type: ignore[arg-type]
            for i, j in _pairs(len(features))]
    return torch.stack(sims).mean()


def weight_similarity(model: MemberEnsemble) -> torch.Tensor:
    """Mean over member pairs and weight tensors (matrices and kernels, trainable) of the
    squared cosine between the two members' tensors: 0 when orthogonal, 1 when parallel."""
    named = [dict(member.named_parameters()) for member in model.members]
    names = [k for k, p in named[0].items() if p.ndim > 1 and p.requires_grad]
    sims = []
    for i, j in _pairs(len(named)):
        for name in names:
            a, b = named[i][name].flatten().float(), named[j][name].flatten().float()
            sims.append((a @ b / (a.norm() * b.norm()).clamp(min=1e-12)) ** 2)
    if not sims:
        return next(model.parameters()).new_zeros(())
    return torch.stack(sims).mean()


def split_members(raw: np.ndarray,
                  to_predictions: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray,
                                                                               list[np.ndarray]]:
    """Raw outputs -> (the prediction, each member's prediction). Stacked outputs (rows, M,
    outputs) give the members' mean and the members; plain ones give themselves and none."""
    if raw.ndim != 3:
        return to_predictions(raw), []
    members = [to_predictions(raw[:, m]) for m in range(raw.shape[1])]
    return np.mean(members, axis=0), members


def mean_pairwise_correlation(predictions: list[np.ndarray]) -> float:
    """Mean Pearson correlation over member pairs of their flattened predictions."""
    flat = [p.ravel() for p in predictions]
    pairs = _pairs(len(flat))
    if not pairs:
        return float("nan")
    return float(np.mean([np.corrcoef(flat[i], flat[j])[0, 1] for i, j in pairs]))
