"""Consistency regularization as an engine callback: from ``start_epoch`` on, each training
batch's loss comes from the configured method (:mod:`.consistency_methods`: FixMatch, UDA,
MixMatch) on that batch and a batch of views of the unlabelled rows (the competition's test
rows), its weight lambda_u ramped up linearly over ``ramp_epochs``.

Each epoch reshuffles the unlabelled rows from its own seed, so a resumed run sees the same
ones; the method's running state (thresholds, alignment, EMA teacher) is in the resume point.
The epoch's mean unlabelled loss, mask rate, rows used and threshold go into the fold's
history and the log, with a warning when the mask rate stays near zero (the method is doing
nothing: a fixed threshold above what the model reaches, e.g. 0.95 under label smoothing).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from pipeline.data.augment import STRONG_IMAGE, AugmentConfig
from pipeline.data.datasets import Batch, CompetitionDataset, ViewsDataset, build_loader
from pipeline.data.memory_views import MemoryViews, memory_views
from pipeline.engine.callbacks.consistency_epochs import over_unlabelled
from pipeline.engine.callbacks.consistency_methods import (
    CONSISTENCY,
    ConsistencyConfig,
    ConsistencyMethod,
)
from pipeline.engine.callbacks.consistency_mixmatch import MixMatch
from pipeline.engine.callbacks.consistency_strong import StrongAugmentConfig
from pipeline.engine.losses import LossFn
from pipeline.engine.trainer import Callback, Trainer

log = logging.getLogger(__name__)
IDLE = 0.01  # a mask rate below this is "near zero": the unlabelled loss is ~never used
IDLE_EPOCHS = 2  # warn when it stays there this many active epochs in a row

# MixMatch is imported for its registration too: the callbacks package loads this module, so
# 'mixmatch' is a known method wherever a ConsistencyConfig is validated
__all__ = ["CONSISTENCY", "Consistency", "ConsistencyConfig", "MixMatch", "StrongAugmentConfig",
           "build_consistency", "over_unlabelled", "unlabelled_views"]


class Consistency(Callback):
    """Adds the unlabelled loss of ``method`` to each training batch from ``start_epoch``
    (1-based) on, its weight ramping up linearly over ``cfg.ramp(...)`` epochs."""

    order = 40  # after batch transforms (an adversarial batch is the labelled batch)

    def __init__(self, method: ConsistencyMethod, unlabelled: ViewsDataset, cfg: ConsistencyConfig,
                 start_epoch: int, seed: int, num_workers: int = 0,
                 loader_mode: str = "stream") -> None:
        self.method = method
        self.dataset = unlabelled
        self.cfg = cfg
        self.start_epoch = start_epoch
        self.seed = seed
        self.num_workers = num_workers
        self.loader_mode = loader_mode  # train.loader: the views held on the device or streamed
        self._held: MemoryViews | None = None  # built at the first active epoch of the fit
        self.generator = torch.Generator()
        self._batches: Any = None
        self._loader: Any = None
        self._step = 0
        # per step of the epoch: loss, trusted fraction, rows trusted, rows seen, threshold
        self._sums: list[torch.Tensor] = []
        self.idle_epochs = 0  # active epochs in a row with a mask rate near zero
        self.warned = False

    def active(self, trainer: Trainer) -> bool:
        """Whether the epoch in progress is at or after ``start_epoch``."""
        return trainer.epoch + 1 >= self.start_epoch

    def on_fit_start(self, trainer: Trainer) -> None:
        self.method.attach(trainer.unwrapped)

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._step = 0
        self._sums = []
        if not self.active(trainer):
            return
        assert trainer.train_loader is not None and trainer.train_loader.batch_size
        size = min(len(self.dataset), trainer.train_loader.batch_size * self.cfg.option("ratio"))
        self.generator.manual_seed(self.seed + trainer.epoch)
        self.dataset.set_epoch(self.seed + 7919 * trainer.epoch)
        self._loader = self._views_loader(trainer, size)
        self._batches = iter(self._loader)

    def _views_loader(self, trainer: Trainer, size: int) -> Any:
        """This epoch's loader of the views: held on the device (decoded and moved once per
        fit) when ``train.loader`` and the views' augmentations allow it, else streamed."""
        if self._held is None and self.loader_mode != "stream":
            self._held = memory_views(self.dataset, size, self.generator, self.loader_mode,
                                      trainer.accelerator.device)
            if self._held is None:  # said why once; stream from now on
                self.loader_mode = "stream"
        if self._held is not None:
            self._held.batch_size = size  # a stage may change the batch size
            return self._held
        return build_loader(self.dataset, size, True, self.num_workers, self.generator)

    def _next(self, trainer: Trainer) -> Batch:
        try:
            batch = next(self._batches)
        except StopIteration:  # fewer unlabelled rows than the epoch needs: go round again
            self._batches = iter(self._loader)
            batch = next(self._batches)
        return trainer._to_device(batch)  # channels-last images where the model is

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
        unlabelled = self._next(trainer)
        loss, step = self.method.loss(trainer.model, batch, unlabelled, loss_fn,
                                      self.weight(trainer))
        self._step += 1
        rows = len(next(iter(unlabelled.values())))
        threshold = step.threshold if step.threshold is not None else float("nan")
        self._sums.append(torch.stack([
            step.loss.float(), step.trusted.float(), step.trusted.float() * rows,
            step.trusted.new_tensor(float(rows)),
            torch.as_tensor(threshold, dtype=step.trusted.dtype, device=step.trusted.device)]))
        return loss

    def on_after_step(self, trainer: Trainer) -> None:
        if self.active(trainer):
            self.method.after_step(trainer.model)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self._sums:
            sums = torch.stack(self._sums).cpu()
            mean_loss, mask_rate = sums[:, :2].mean(dim=0).tolist()
            used, seen = sums[:, 2:4].sum(dim=0).tolist()
            record = {"unlabelled_loss": mean_loss, "unlabelled_mask_rate": mask_rate,
                      "unlabelled_rows_used": round(used)}
            if not torch.isnan(sums[:, 4]).all():
                record["unlabelled_threshold"] = float(sums[:, 4].mean())
            trainer.history.epochs[-1].update(record)
            self._report(trainer, record, round(seen))
        self._loader = self._batches = None
        self._sums = []

    def _report(self, trainer: Trainer, record: dict[str, float], seen: int) -> None:
        """Log the epoch's use of the unlabelled rows; warn once when the mask rate has
        stayed near zero for ``IDLE_EPOCHS`` epochs (the method is doing nothing)."""
        threshold = record.get("unlabelled_threshold")
        log.info("%s epoch %d: %d of %d unlabelled rows passed the threshold%s (mask rate "
                 "%.3f), unlabelled loss %.4f", trainer.desc, trainer.epoch,
                 record["unlabelled_rows_used"], seen,
                 f" {threshold:.3f}" if threshold is not None else "",
                 record["unlabelled_mask_rate"], record["unlabelled_loss"])
        self.idle_epochs = self.idle_epochs + 1 if record["unlabelled_mask_rate"] < IDLE else 0
        if self.idle_epochs == IDLE_EPOCHS and not self.warned:
            self.warned = True  # once per fit: the advice does not change
            log.warning(
                "%s: the unlabelled mask rate has stayed below %.0f%% for %d epochs: "
                "consistency is doing nothing (the threshold is above the model's confidence). "
                "Try 'thresholds: adaptive', a lower 'threshold', or a later start",
                trainer.desc, 100 * IDLE, IDLE_EPOCHS)

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict(), "idle_epochs": self.idle_epochs,
                "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # resume points written before the method had state hold an empty dict
        self.method.load_state_dict(state.get("method", {}))
        self.idle_epochs = state.get("idle_epochs", 0)
        self.warned = state.get("warned", False)


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
    seed: int, num_workers: int = 0, loader_mode: str = "stream",
) -> Consistency:
    """The callback of ``cfg.method`` over the rows of ``unlabelled``, its views held on the
    training device or streamed as ``loader_mode`` (``train.loader``) says."""
    method = CONSISTENCY.get(cfg.method)(cfg, task, n_outputs, set(encoder_kinds) == {"timm"})
    views = unlabelled_views(unlabelled, cfg.method, cfg, weak)
    return Consistency(method, views, cfg, start_epoch, seed, num_workers, loader_mode)
