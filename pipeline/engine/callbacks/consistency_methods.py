"""Consistency methods on unlabelled rows (the competition's test rows) and their config:
each method turns a labelled batch and a batch of unlabelled views into supervised loss +
lambda_u x unlabelled loss. :mod:`pipeline.engine.callbacks.consistency` runs them.

- ``fixmatch`` (Sohn et al. 2020): the weak view (``train.augment``) gives a hard label where
  its confidence reaches the threshold; the strong view is trained on it. The unlabelled loss
  is averaged over every unlabelled row, masked ones counting as zero.
- ``uda`` (Xie et al. 2020): the strong view's prediction follows the clean row's, sharpened
  by a temperature, by KL divergence over the rows whose confidence reaches the threshold
  (averaged over those rows). Regression: mean squared difference, no mask.
- ``mixmatch`` (Berthelot et al. 2019): the label of an unlabelled row is the sharpened mean
  prediction over K weak views; labelled and unlabelled rows are mixed with a partner drawn
  from both (mixup, lambda = max(l, 1 - l), l ~ Beta(alpha, alpha)), pixels for image-only
  models and pooled features otherwise (as MixText does for text); labelled rows take the
  configured loss, unlabelled ones the squared error of their probabilities.

Strong views: images through :data:`pipeline.data.augment.STRONG_IMAGE` (or the configured
transforms), text through token noise; tabular and text rows also through Gaussian noise after
the embedding layer (:func:`pipeline.models.network.embedding_noise`), which MixMatch puts on every
unlabelled view. Confidence and sharpening work per row for multiclass (softmax) and per cell
for binary and multilabel (sigmoid).

The teacher passes (weak views) run without gradients; every pass runs in training mode, so
batch-norm statistics see the unlabelled rows as in the reference implementations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.competition import probabilities
from pipeline.data.augment import TabularNoiseConfig, TextNoiseConfig, build_image_augment
from pipeline.data.datasets import Batch, view_of
from pipeline.engine.losses import LossFn
from pipeline.models.network import embedding_noise
from pipeline.registry import Registry
from pipeline.schema import Section


class StrongAugmentConfig(Section):
    """The strong view of an unlabelled row, per input kind (FixMatch and UDA).

    ``image``: albumentations transforms (None: a RandAugment-like default, two of
    affine/colour/contrast/sharpness/equalise/posterise/solarise ops per row, then cutout; see
    :data:`pipeline.data.augment.STRONG_IMAGE`). ``text``: token noise. ``tabular``: swap/Gaussian
    noise on rows.
    """

    image: list[dict[str, Any]] | None = None
    text: TextNoiseConfig = TextNoiseConfig(mask=0.15, delete=0.05, swap=0.05)
    tabular: TabularNoiseConfig = TabularNoiseConfig()

    @field_validator("image")
    @classmethod
    def _albumentations(cls, items: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if items is not None:
            build_image_augment(items)
        return items


class ConsistencyConfig(Section):
    """Consistency regularization on the unlabelled (test) rows, from ``start_epoch`` or
    ``start_stage`` (1-based) on. See :mod:`pipeline.engine.callbacks.consistency`.

    ``fixmatch``: hard labels from the weak view (``train.augment``) where the confidence
    reaches ``threshold`` train the strong view. ``uda``: the strong view's prediction
    follows the clean row's, sharpened by ``temperature``, where confident. ``mixmatch``:
    labels guessed from ``augmentations`` weak views, sharpened, then mixup (Beta(``alpha``))
    of labelled and unlabelled rows (pixels for image models, pooled features otherwise).
    ``weight`` (lambda_u) multiplies the unlabelled loss, reached linearly over
    ``ramp_epochs``; an unlabelled batch holds ``ratio`` x the labelled batch size.
    ``embedding_noise``: Gaussian noise after the embedding layer of tabular ('mlp': category
    embeddings and the standardised numbers) and text ('hf': word embeddings) encoders, as a
    fraction of each table's std, on the student views (fixmatch, uda: the strong view) or on
    every unlabelled view (mixmatch): the augmentation of rows that have no other.
    """

    method: str  # a name in CONSISTENCY
    weight: float | None = Field(None, gt=0)  # None: the method's default
    threshold: float | None = Field(None, gt=0, lt=1)
    temperature: float | None = Field(None, gt=0, le=1)
    ratio: int = Field(1, ge=1)
    augmentations: int = Field(2, ge=1)  # mixmatch's K
    alpha: float = Field(0.75, gt=0)  # mixmatch's Beta parameter
    embedding_noise: float = Field(0.1, ge=0)
    # None: the method's default (MixMatch: half its active epochs, as its large weight
    # needs; FixMatch and UDA: none)
    ramp_epochs: float | None = Field(None, ge=0)
    start_epoch: int | None = Field(None, ge=1)
    start_stage: int | None = Field(None, ge=1)
    strong: StrongAugmentConfig = StrongAugmentConfig()

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        if method not in CONSISTENCY:
            raise ValueError(CONSISTENCY.unknown_message(method))
        return method

    @model_validator(mode="after")
    def _check(self) -> ConsistencyConfig:
        defaults = CONSISTENCY.get(self.method).defaults
        for key in ("threshold", "temperature"):
            if getattr(self, key) is not None and defaults[key] is None:
                raise ValueError(f"method {self.method!r} takes no {key!r}")
        if self.method == "mixmatch" and "strong" in self.model_fields_set:
            raise ValueError("method 'mixmatch' uses weak views only ('train.augment'); "
                             "'strong' belongs to fixmatch and uda")
        if self.method != "mixmatch" and {"augmentations", "alpha"} & self.model_fields_set:
            raise ValueError("'augmentations' and 'alpha' belong to method 'mixmatch'")
        if self.start_epoch is not None and self.start_stage is not None:
            raise ValueError("give 'start_epoch' or 'start_stage', not both")
        return self

    def resolved(self, key: str) -> float:
        """``weight``, ``threshold`` or ``temperature``, or the method's default."""
        value = getattr(self, key)
        default = CONSISTENCY.get(self.method).defaults[key]
        return float(value if value is not None else default)  # type: ignore[arg-type]

    def ramp(self, active_epochs: int) -> float:
        """Epochs over which lambda_u grows from 0, for a method active ``active_epochs``."""
        if self.ramp_epochs is not None:
            return self.ramp_epochs
        return CONSISTENCY.get(self.method).ramp_fraction * active_epochs

    def mismatch(self, task: str, aux_losses: bool) -> str | None:
        """Why this method cannot train a model of ``task`` (with auxiliary losses or not),
        or None when it can."""
        method = CONSISTENCY.get(self.method)
        if task not in method.tasks:
            fits = [m for m in CONSISTENCY if task in CONSISTENCY.get(m).tasks]
            return (f"'train.consistency.method' {self.method} needs class confidences; "
                    f"for {task} use {' or '.join(fits)}")
        if method.mixes_rows and aux_losses:
            return (f"'train.consistency.method' {self.method} mixes rows of different "
                    "classes, which leaves 'train.aux_losses' no class per row")
        return None


def sharpen(task: str, probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Raise each class probability to 1/T and renormalise (per cell for sigmoid tasks)."""
    if task == "regression":
        return probs
    if task == "multiclass":
        powered = probs.pow(1.0 / temperature)
        return powered / powered.sum(dim=1, keepdim=True)
    up, down = probs.pow(1.0 / temperature), (1 - probs).pow(1.0 / temperature)
    return up / (up + down).clamp_min(1e-12)


def cell_confidence(task: str, probs: torch.Tensor) -> torch.Tensor:
    """What a confidence threshold masks: the top class probability per row (multiclass,
    shape (n, 1)), or each cell's max(p, 1 - p) for sigmoid tasks."""
    if task == "multiclass":
        return probs.max(dim=1, keepdim=True).values
    return torch.maximum(probs, 1 - probs)


def soft_cross_entropy(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target probabilities: per row (n, 1) for multiclass, per cell
    for sigmoid tasks."""
    logits = logits.float()
    if task == "multiclass":
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def _entropy(task: str, target: torch.Tensor) -> torch.Tensor:
    """Entropy of target probabilities, laid out like :func:`soft_cross_entropy`."""
    t = target.clamp_min(1e-12)
    if task == "multiclass":
        return -(target * t.log()).sum(dim=1, keepdim=True)
    u = (1 - target).clamp_min(1e-12)
    return -(target * t.log() + (1 - target) * u.log())


def encoded_targets(task: str, target: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Training targets as float rows like the outputs: one-hot for class indices."""
    if task == "multiclass" and target.ndim == 1:
        return F.one_hot(target.long(), n_outputs).float()
    return target.float().reshape(len(target), -1)


@dataclass
class Step:
    """What one unlabelled batch contributed: its loss and the fraction of it trusted, kept
    on the device (read once an epoch, not once a step)."""

    loss: torch.Tensor
    trusted: torch.Tensor

    @property
    def mask_rate(self) -> float:
        """The fraction of the unlabelled rows (cells) the loss used."""
        return float(self.trusted)


class ConsistencyMethod(ABC):
    """One consistency method: which views of the unlabelled rows it reads and its loss.

    The class itself is the registry entry (:data:`CONSISTENCY`): its defaults, the tasks it
    can train and whether it mixes rows are class attributes.
    """

    # FixMatch (Sohn et al. 2020), UDA (Xie et al. 2020), MixMatch (Berthelot et al. 2019)
    defaults: ClassVar[dict[str, float | None]]  # weight, threshold, temperature
    tasks: ClassVar[tuple[str, ...]] = ("binary", "multiclass", "multilabel", "regression")
    mixes_rows: ClassVar[bool] = False
    # default ramp of lambda_u, as a fraction of the epochs the method is active
    ramp_fraction: ClassVar[float] = 0.0

    def __init__(self, cfg: ConsistencyConfig, task: str, n_outputs: int | None = None,
                 image_only: bool = False) -> None:
        self.cfg = cfg
        self.task = task
        self.n_outputs = n_outputs
        self.image_only = image_only  # the model reads images alone (pixels can be mixed)
        self.views = list(self.view_kinds(cfg))

    @staticmethod
    @abstractmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        """Each view's name and augmentation: 'clean', 'weak' (train.augment) or 'strong'."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        """Total loss of a labelled batch and an unlabelled batch of views."""


class _TeacherStudent(ConsistencyMethod):
    """A teacher view (no gradient) whose prediction targets a noisier student view."""

    def passes(self, model: nn.Module, batch: Batch, unlabelled: Batch,
               loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Supervised loss, teacher probabilities, student outputs."""
        teacher, student = self.views
        supervised = loss_fn(model(batch), batch)
        with torch.no_grad():
            probs = probabilities(self.task, model(view_of(unlabelled, teacher)))
        with embedding_noise(model, self.cfg.embedding_noise):
            outputs = model(view_of(unlabelled, student))
        return supervised, probs, outputs


class FixMatch(_TeacherStudent):
    """Hard labels from confident weak views train the strong views."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 1.0, "threshold": 0.95, "temperature": None}
    tasks = ("binary", "multiclass", "multilabel")

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {"weak": "weak", "strong": "strong"}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        supervised, probs, strong = self.passes(model, batch, unlabelled, loss_fn)
        mask = (cell_confidence(self.task, probs) >= self.cfg.resolved("threshold")).float()
        hard = (F.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
                if self.task == "multiclass" else (probs >= 0.5).float())
        unsup = (soft_cross_entropy(self.task, strong, hard) * mask).mean()
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean())


class UDA(_TeacherStudent):
    """The strong view follows the clean view's sharpened prediction where it is confident."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 1.0, "threshold": 0.8, "temperature": 0.4}

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {"clean": "clean", "strong": "strong"}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        supervised, probs, strong = self.passes(model, batch, unlabelled, loss_fn)
        if self.task == "regression":
            unsup = F.mse_loss(strong.float(), probs)
            return supervised + weight * unsup, Step(unsup.detach(), unsup.new_ones(()))
        target = sharpen(self.task, probs, self.cfg.resolved("temperature"))
        mask = (cell_confidence(self.task, probs) >= self.cfg.resolved("threshold")).float()
        kl = soft_cross_entropy(self.task, strong, target) - _entropy(self.task, target)
        unsup = (kl * mask).sum() / mask.sum().clamp_min(1.0)
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean())


class MixMatch(ConsistencyMethod):
    """Guessed labels from K weak views, sharpened, then mixup of every row (pixels for
    image-only models, pooled features otherwise)."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 75.0, "threshold": None, "temperature": 0.5}
    mixes_rows = True
    # the paper ramps lambda_u = 75 up linearly; at full weight from the first step the
    # guessed labels of an untrained model swamp the labelled loss
    ramp_fraction = 0.5

    def __init__(self, cfg: ConsistencyConfig, task: str, n_outputs: int | None = None,
                 image_only: bool = False) -> None:
        if n_outputs is None:
            raise ValueError("MixMatch needs n_outputs: it one-hot encodes class indices")
        super().__init__(cfg, task, n_outputs, image_only)
        self.beta = torch.distributions.Beta(cfg.alpha, cfg.alpha)

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {f"weak{k}": "weak" for k in range(cfg.augmentations)}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        views = [view_of(unlabelled, name) for name in self.views]
        noisy = embedding_noise(model, self.cfg.embedding_noise)  # the views of tabular rows
        with torch.no_grad(), noisy:
            guess = torch.stack([probabilities(self.task, model(v)) for v in views]).mean(0)
            guess = sharpen(self.task, guess, self.cfg.resolved("temperature"))
        n = len(batch["target"])
        targets = torch.cat([encoded_targets(self.task, batch["target"], self.n_outputs),
                             guess.repeat(len(views), 1)])
        lam = float(self.beta.sample())
        lam = max(lam, 1 - lam)  # the mixed row stays closer to its own
        perm = torch.randperm(len(targets), device=targets.device)
        mixed_targets = lam * targets + (1 - lam) * targets[perm]
        if self.image_only:
            images = torch.cat([batch["image"], *(v["image"] for v in views)])
            outputs = model({"image": lam * images + (1 - lam) * images[perm]})
        else:
            core: Any = getattr(model, "module", model)  # the model under any DDP wrapper
            with embedding_noise(model, self.cfg.embedding_noise):
                unlabelled_features = [core.encode(v) for v in views]
            features = torch.cat([core.encode(batch), *unlabelled_features])
            outputs = core.classify(lam * features + (1 - lam) * features[perm])
        labelled: Batch = {"target": mixed_targets[:n]}
        if "weight" in batch:
            weights = torch.cat([batch["weight"], batch["weight"].new_ones(len(targets) - n)])
            labelled["weight"] = lam * weights[:n] + (1 - lam) * weights[perm][:n]
        supervised = loss_fn(outputs[:n], labelled)
        unsup = F.mse_loss(probabilities(self.task, outputs[n:]), mixed_targets[n:])
        return supervised + weight * unsup, Step(unsup.detach(), unsup.new_ones(()))


CONSISTENCY: Registry[type[ConsistencyMethod]] = Registry("consistency method")
CONSISTENCY.add("fixmatch", FixMatch)
CONSISTENCY.add("uda", UDA)
CONSISTENCY.add("mixmatch", MixMatch)
