"""Training losses by config name, each built from its ``params``; ``auto`` follows the task.

A loss maps the model outputs and the batch (its ``target``) to a scalar. ``sum`` adds
weighted terms, e.g. focal + cross-entropy, and any term may use its own parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from pipeline.competition import CLASSIFICATION
from pipeline.data.datasets import Batch
from pipeline.registry import Registry
from pipeline.schema import Section

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


@dataclass(frozen=True)
class LossInfo:
    """A registered loss: its factory (``params`` are its keyword arguments) and the tasks
    whose targets it reads."""

    factory: Callable[..., LossFn]
    tasks: tuple[str, ...]


LOSSES: Registry[LossInfo] = Registry("loss")
AUTO_LOSS = {"binary": "bce", "multilabel": "bce", "multiclass": "cross_entropy",
             "regression": "mse"}


def _loss(name: str, tasks: tuple[str, ...]) -> Callable[[Callable[..., LossFn]],
                                                         Callable[..., LossFn]]:
    """Register a loss factory under ``name`` for ``tasks``."""

    def register(factory: Callable[..., LossFn]) -> Callable[..., LossFn]:
        LOSSES.add(name, LossInfo(factory, tasks), (factory.__doc__ or "").split("\n")[0])
        return factory

    return register


def _smooth_binary(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    return target * (1 - smoothing) + 0.5 * smoothing if smoothing else target


def _reduce(per_row: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over rows (and over columns first), weighted by ``batch["weight"]`` when present
    (pseudo-labelled rows carry their own weight). With ``batch["present"]``
    (:func:`masked_cells`), the mean over the cells that hold a target, each weighted by its
    row's weight."""
    present = batch.get("present")
    if present is not None:
        cells = present.to(per_row)
        if "weight" in batch:
            cells = cells * batch["weight"].to(per_row).reshape(-1, *[1] * (cells.ndim - 1))
        return (per_row * cells).sum() / cells.sum().clamp(min=1e-12)
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


@_loss("cross_entropy", ("multiclass",))
def cross_entropy(smoothing: float = 0.0, class_weights: list[float] | None = None) -> LossFn:
    """Softmax cross-entropy on class indices or class probabilities (soft labels), with
    optional label smoothing and class weights."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = _class_target(batch["target"])
        if not class_weights and "weight" not in batch:  # the mean inside: fewer kernels
            return F.cross_entropy(outputs.float(), target, label_smoothing=smoothing)
        # float32 as the logits: YAML's [1, 2] reads as integers, which cross_entropy refuses
        weight = (torch.tensor(class_weights, dtype=torch.float32, device=outputs.device)
                  if class_weights else None)
        per_row = F.cross_entropy(outputs.float(), target, weight=weight,
                                  label_smoothing=smoothing, reduction="none")
        return _reduce(per_row, batch)

    return loss


@_loss("bce", ("binary", "multilabel", "regression"))
def bce(smoothing: float = 0.0, pos_weight: list[float] | None = None) -> LossFn:
    """Binary cross-entropy on logits per label; smoothing pulls 0/1 targets toward 0.5.
    A regression's targets are scaled into [0, 1] for it (``TrainConfig.bounded``)."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = torch.tensor(pos_weight, device=outputs.device) if pos_weight else None
        target = _smooth_binary(batch["target"].float(), smoothing)
        if "weight" not in batch and "present" not in batch:  # the mean of all cells
            return F.binary_cross_entropy_with_logits(outputs.float(), target,
                                                      pos_weight=weight)
        per_cell = F.binary_cross_entropy_with_logits(outputs.float(), target,
                                                      pos_weight=weight, reduction="none")
        return _reduce(per_cell, batch)

    return loss


@_loss("focal", CLASSIFICATION)
def focal(gamma: float = 2.0, alpha: float | list[float] | None = None, smoothing: float = 0.0,
          softmax: bool | None = None) -> LossFn:
    """Focal loss (Lin et al. 2017): softmax over classes (class indices or probabilities),
    sigmoid per label for 0/1 targets. ``softmax`` None decides by the task.

    ``alpha`` balances classes: with softmax a list holds one weight per class (a single
    number only rescales the loss); with sigmoids a number weighs positives by alpha and
    negatives by 1 - alpha, and a list gives each label its own alpha. ``gamma`` 0 and no
    ``alpha`` give plain cross-entropy / BCE.
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
                weight = weight * _per_column(alpha, n, logits)
            return _reduce(-(soft * weight * logp).sum(dim=1), batch)
        target = _smooth_binary(target.float(), smoothing)
        if isinstance(alpha, list):
            a = _per_column(alpha, logits.shape[1], logits)
            p = logits.sigmoid()
            ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            p_t = p * target + (1 - p) * (1 - target)
            per_cell = (a * target + (1 - a) * (1 - target)) * ce * (1 - p_t).pow(gamma)
        else:
            from torchvision.ops import sigmoid_focal_loss  # imports torch._dynamo: ~1 s

            per_cell = sigmoid_focal_loss(logits, target, alpha=-1 if alpha is None else alpha,
                                          gamma=gamma, reduction="none")
        return _reduce(per_cell, batch)

    return loss


def _per_column(alpha: float | list[float], n: int, like: torch.Tensor) -> torch.Tensor | float:
    """``alpha`` as one weight per output column (a list must have ``n`` of them)."""
    if not isinstance(alpha, list):
        return alpha
    if len(alpha) != n:
        raise ValueError(f"focal 'alpha' lists {len(alpha)} weights for {n} output columns")
    return torch.tensor(alpha, dtype=like.dtype, device=like.device)[None, :]


@_loss("mse", ("regression",))
def mse() -> LossFn:
    """Mean squared error."""
    return lambda outputs, batch: _reduce(
        F.mse_loss(outputs.float(), batch["target"].float(), reduction="none"), batch)


@_loss("l1", ("regression",))
def l1() -> LossFn:
    """Mean absolute error."""
    return lambda outputs, batch: _reduce(
        F.l1_loss(outputs.float(), batch["target"].float(), reduction="none"), batch)


@_loss("huber", ("regression",))
def huber(delta: float = 1.0) -> LossFn:
    """Huber loss (on standardised regression targets)."""
    return lambda outputs, batch: _reduce(
        F.huber_loss(outputs.float(), batch["target"].float(), delta=delta, reduction="none"),
        batch)


class LossTermConfig(Section):
    """One weighted term of a ``sum`` loss."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> LossTermConfig:
        _check_loss(self.name, self.params)
        return self


def _check_loss(name: str, params: dict[str, Any]) -> None:
    if name not in LOSSES:
        raise ValueError(LOSSES.unknown_message(name))
    check_params(name, params)


class LossConfig(Section):
    """Training loss: ``auto`` (CE, BCE or MSE by task), a registered loss with ``params``
    (focal: gamma, alpha; cross_entropy/bce/focal: smoothing), or ``sum`` of ``terms``."""

    name: str = "auto"
    params: dict[str, Any] = Field(default_factory=dict)
    terms: list[LossTermConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ("auto", "sum") and name not in LOSSES:
            raise ValueError(LOSSES.unknown_message(name))
        return name

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.name == "sum":
            if not self.terms:
                raise ValueError("loss 'sum' needs 'terms': [{name, weight, params}, ...]")
        elif self.terms:
            raise ValueError(f"'terms' belong to loss 'sum', not {self.name!r}")
        elif self.name != "auto":
            _check_loss(self.name, self.params)
        elif self.params:
            raise ValueError("loss 'auto' takes no 'params'; name the loss to set them")
        return self

    def names(self) -> list[str]:
        """The registered losses this config uses."""
        return [t.name for t in self.terms] if self.name == "sum" else [self.name]


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming unknown parameters of loss ``name``."""
    known = list(inspect.signature(LOSSES.get(name).factory).parameters)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter(s) {unknown}. Known: {known}")


# the losses that score each target cell on its own (focal only per label, not its softmax):
# the ones 'competition.missing_targets: mask' can restrict to the cells a row holds
MASKABLE = ("bce", "focal", "mse", "l1", "huber")


def mask_mismatch(loss: LossConfig, key: str) -> str | None:
    """Why ``loss`` (at config ``key``) cannot be restricted to the target cells a row holds
    ('competition.missing_targets: mask'), or None."""
    terms = loss.terms if loss.name == "sum" else [loss]
    for term in terms:
        if term.name not in ("auto", *MASKABLE) or term.params.get("softmax"):
            what = "focal with 'softmax: true'" if term.name == "focal" else repr(term.name)
            return (f"'{key}.loss' {what} scores whole rows, so it cannot leave out the "
                    "targets a row lacks ('competition.missing_targets: mask'); use one of "
                    f"{', '.join(MASKABLE)} (focal per label)")
    return None


def masked_cells(fn: LossFn) -> LossFn:
    """``fn`` over the target cells a batch holds: a NaN cell (a target its row lacks,
    'competition.missing_targets: mask') is filled with 0, so no NaN reaches a gradient, and
    left out of the mean (``batch["present"]``, read by the losses' reduction)."""

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["target"]
        present = ~torch.isnan(target)
        return fn(outputs, {**batch, "target": target.nan_to_num(0.0), "present": present})

    return loss


def build_loss(name: str, task: str, params: dict[str, Any] | None = None,
               terms: list[tuple[str, float, dict[str, Any]]] | None = None,
               masked: bool = False) -> LossFn:
    """The named loss (``auto``: the task's natural one), or a weighted sum of ``terms``;
    ``masked``: over the target cells a batch holds (:func:`masked_cells`)."""
    if masked:
        return masked_cells(build_loss(name, task, params, terms))
    if terms:
        parts = [(build_loss(n, task, p), w) for n, w, p in terms]
        return lambda outputs, batch: sum(w * fn(outputs, batch) for fn, w in parts)
    resolved = AUTO_LOSS[task] if name == "auto" else name
    params = dict(params or {})
    if resolved == "focal":
        params.setdefault("softmax", task == "multiclass")
    return LOSSES.get(resolved).factory(**params)
