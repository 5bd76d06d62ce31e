"""Consistency regularization on unlabelled rows (the competition's test rows) as an engine
callback that supplies the training loss: supervised loss + lambda_u x unlabelled loss.

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

Strong views: images through :data:`pipeline.augment.STRONG_IMAGE` (or the configured
transforms), text through token noise; tabular and text rows also through Gaussian noise after
the embedding layer (:func:`pipeline.models.embedding_noise`), which MixMatch puts on every
unlabelled view. Confidence and sharpening work per row for multiclass (softmax) and per cell
for binary and multilabel (sigmoid).

The teacher passes (weak views) run without gradients; every pass runs in training mode, so
batch-norm statistics see the unlabelled rows as in the reference implementations. Each
epoch reshuffles the unlabelled rows from its own seed, so a resumed run sees the same ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import AugmentConfig, ConsistencyConfig
from pipeline.data import CompetitionDataset, ViewsDataset, build_loader, view_of
from pipeline.engine import Batch, Callback, LossFn, Trainer
from pipeline.models import embedding_noise


def probabilities(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """Softmax (multiclass), sigmoid (binary, multilabel) or the values (regression)."""
    outputs = outputs.float()
    if task == "multiclass":
        return outputs.softmax(dim=1)
    return outputs.sigmoid() if task in ("binary", "multilabel") else outputs


def sharpen(task: str, probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Raise each class probability to 1/T and renormalise (per cell for sigmoid tasks)."""
    if task == "regression":
        return probs
    if task == "multiclass":
        powered = probs.pow(1.0 / temperature)
        return powered / powered.sum(dim=1, keepdim=True)
    up, down = probs.pow(1.0 / temperature), (1 - probs).pow(1.0 / temperature)
    return up / (up + down).clamp_min(1e-12)


def confidence(task: str, probs: torch.Tensor) -> torch.Tensor:
    """The top class probability per row (multiclass, shape (n, 1)) or per cell."""
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


class Method(ABC):
    """One consistency method: which views of the unlabelled rows it reads and its loss."""

    def __init__(self, cfg: ConsistencyConfig, task: str) -> None:
        self.cfg = cfg
        self.task = task
        self.views = list(self.view_kinds(cfg))

    @staticmethod
    @abstractmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        """Each view's name and augmentation: 'clean', 'weak' (train.augment) or 'strong'."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        """Total loss of a labelled batch and an unlabelled batch of views."""


class _TeacherStudent(Method):
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

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {"weak": "weak", "strong": "strong"}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        supervised, probs, strong = self.passes(model, batch, unlabelled, loss_fn)
        mask = (confidence(self.task, probs) >= self.cfg.resolved("threshold")).float()
        hard = (F.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
                if self.task == "multiclass" else (probs >= 0.5).float())
        unsup = (soft_cross_entropy(self.task, strong, hard) * mask).mean()
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean())


class UDA(_TeacherStudent):
    """The strong view follows the clean view's sharpened prediction where it is confident."""

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
        mask = (confidence(self.task, probs) >= self.cfg.resolved("threshold")).float()
        kl = soft_cross_entropy(self.task, strong, target) - _entropy(self.task, target)
        unsup = (kl * mask).sum() / mask.sum().clamp_min(1.0)
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean())


class MixMatch(Method):
    """Guessed labels from K weak views, sharpened, then mixup of every row."""

    def __init__(self, cfg: ConsistencyConfig, task: str, mix_inputs: bool,
                 n_outputs: int) -> None:
        super().__init__(cfg, task)
        self.mix_inputs = mix_inputs  # pixels (image-only models) or pooled features
        self.n_outputs = n_outputs
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
        if self.mix_inputs:
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


class Consistency(Callback):
    """Adds the unlabelled loss of ``method`` to each training batch from ``start_epoch``
    (1-based) on, its weight ramping up linearly over ``cfg.ramp_epochs``."""

    order = 40  # after batch transforms (an adversarial batch is the labelled batch)

    def __init__(self, method: Method, unlabelled: ViewsDataset, cfg: ConsistencyConfig,
                 start_epoch: int, seed: int, num_workers: int = 0) -> None:
        self.method = method
        self.dataset = unlabelled
        self.cfg = cfg
        self.start_epoch = start_epoch
        self.seed = seed
        self.num_workers = num_workers
        self.generator = torch.Generator()
        self._batches: Any = None
        self._loader: Any = None
        self._step = 0
        self._sums: list[torch.Tensor] = []  # per-step (loss, trusted fraction) of the epoch

    def active(self, trainer: Trainer) -> bool:
        """Whether the epoch in progress is at or after ``start_epoch``."""
        return trainer.epoch + 1 >= self.start_epoch

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._step = 0
        self._sums = []
        if not self.active(trainer):
            return
        assert trainer.train_loader is not None and trainer.train_loader.batch_size
        size = min(len(self.dataset), trainer.train_loader.batch_size * self.cfg.ratio)
        self.generator.manual_seed(self.seed + trainer.epoch)
        self.dataset.set_epoch(self.seed + 7919 * trainer.epoch)
        self._loader = build_loader(self.dataset, size, True, self.num_workers, self.generator)
        self._batches = iter(self._loader)

    def _next(self, trainer: Trainer) -> Batch:
        try:
            batch = next(self._batches)
        except StopIteration:  # fewer unlabelled rows than the epoch needs: go round again
            self._batches = iter(self._loader)
            batch = next(self._batches)
        device = trainer.accelerator.device
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def weight(self, trainer: Trainer) -> float:
        """lambda_u at this step, ramped up over ``ramp_epochs`` from ``start_epoch``."""
        full = self.cfg.resolved("weight")
        if not self.cfg.ramp_epochs:
            return full
        assert trainer.train_loader is not None
        done = trainer.epoch + 1 - self.start_epoch + self._step / len(trainer.train_loader)
        return full * min(1.0, done / self.cfg.ramp_epochs)

    def training_loss(self, trainer: Trainer, batch: Batch,
                      loss_fn: LossFn) -> torch.Tensor | None:
        if not self.active(trainer):
            return None
        loss, step = self.method.loss(trainer.model, batch, self._next(trainer), loss_fn,
                                      self.weight(trainer))
        self._step += 1
        self._sums.append(torch.stack([step.loss.float(), step.trusted.float()]))
        return loss

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self._sums:
            mean_loss, mask_rate = torch.stack(self._sums).mean(dim=0).tolist()
            trainer.history.epochs[-1].update(unlabelled_loss=mean_loss,
                                              unlabelled_mask_rate=mask_rate)
        self._loader = self._batches = None
        self._sums = []


METHODS: dict[str, type[Method]] = {"fixmatch": FixMatch, "uda": UDA, "mixmatch": MixMatch}


def unlabelled_views(dataset: CompetitionDataset, method: str, cfg: ConsistencyConfig,
                     weak: AugmentConfig | None) -> ViewsDataset:
    """The views of the unlabelled rows that ``method`` reads."""
    from pipeline.augment import STRONG_IMAGE

    strong = AugmentConfig(
        image=cfg.strong.image if cfg.strong.image is not None else STRONG_IMAGE,
        text=cfg.strong.text, tabular=cfg.strong.tabular,
    )
    augment = {"clean": None, "weak": weak, "strong": strong}
    kinds = METHODS[method].view_kinds(cfg)
    return ViewsDataset({name: dataset.with_augment(augment[kind])
                         for name, kind in kinds.items()})


def build_consistency(
    cfg: ConsistencyConfig, task: str, unlabelled: CompetitionDataset,
    weak: AugmentConfig | None, encoder_kinds: list[str], n_outputs: int, start_epoch: int,
    seed: int, num_workers: int = 0,
) -> Consistency:
    """The callback of ``cfg.method`` over the rows of ``unlabelled``."""
    method = (MixMatch(cfg, task, set(encoder_kinds) == {"timm"}, n_outputs)
              if cfg.method == "mixmatch" else METHODS[cfg.method](cfg, task))
    views = unlabelled_views(unlabelled, cfg.method, cfg, weak)
    return Consistency(method, views, cfg, start_epoch, seed, num_workers)
