"""Consistency regularization as an engine callback: from ``start_epoch`` on, each training
batch's loss comes from the configured method (:mod:`.consistency_methods`: FixMatch, UDA,
MixMatch) on that batch and a batch of views of the unlabelled rows (the competition's test
rows), its weight lambda_u ramped up linearly over ``ramp_epochs``.

Each epoch reshuffles the unlabelled rows from its own seed, so a resumed run sees the same
ones; the epoch's mean unlabelled loss and mask rate go into the fold's history.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.data.augment import STRONG_IMAGE, AugmentConfig
from pipeline.data.datasets import Batch, CompetitionDataset, ViewsDataset, build_loader
from pipeline.engine.callbacks.consistency_methods import (
    CONSISTENCY,
    ConsistencyConfig,
    ConsistencyMethod,
    StrongAugmentConfig,
)
from pipeline.engine.losses import LossFn
from pipeline.engine.trainer import Callback, Trainer

__all__ = ["CONSISTENCY", "Consistency", "ConsistencyConfig", "StrongAugmentConfig",
           "build_consistency", "unlabelled_views"]


class Consistency(Callback):
    """Adds the unlabelled loss of ``method`` to each training batch from ``start_epoch``
    (1-based) on, its weight ramping up linearly over ``cfg.ramp(...)`` epochs."""

    order = 40  # after batch transforms (an adversarial batch is the labelled batch)

    def __init__(self, method: ConsistencyMethod, unlabelled: ViewsDataset, cfg: ConsistencyConfig,
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
        ramp = self.cfg.ramp(max(1, trainer.total_epochs - self.start_epoch + 1))
        if not ramp:
            return full
        assert trainer.train_loader is not None
        done = trainer.epoch + 1 - self.start_epoch + self._step / len(trainer.train_loader)
        return full * min(1.0, done / ramp)

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


def unlabelled_views(dataset: CompetitionDataset, method: str, cfg: ConsistencyConfig,
                     weak: AugmentConfig | None) -> ViewsDataset:
    """The views of the unlabelled rows that ``method`` reads."""
    strong = AugmentConfig(
        image=cfg.strong.image if cfg.strong.image is not None else STRONG_IMAGE,
        text=cfg.strong.text, tabular=cfg.strong.tabular,
    )
    augment = {"clean": None, "weak": weak, "strong": strong}
    kinds = CONSISTENCY.get(method).view_kinds(cfg)
    return ViewsDataset({name: dataset.with_augment(augment[kind])
                         for name, kind in kinds.items()})


def build_consistency(
    cfg: ConsistencyConfig, task: str, unlabelled: CompetitionDataset,
    weak: AugmentConfig | None, encoder_kinds: list[str], n_outputs: int, start_epoch: int,
    seed: int, num_workers: int = 0,
) -> Consistency:
    """The callback of ``cfg.method`` over the rows of ``unlabelled``."""
    method = CONSISTENCY.get(cfg.method)(cfg, task, n_outputs, set(encoder_kinds) == {"timm"})
    views = unlabelled_views(unlabelled, cfg.method, cfg, weak)
    return Consistency(method, views, cfg, start_epoch, seed, num_workers)
