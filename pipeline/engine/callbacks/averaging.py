"""Weight averaging and stopping as engine callbacks, each with its config: EMA, SWA,
snapshot ensembles, early stopping."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from pipeline.data.batching import drops_lone_row
from pipeline.engine.batchnorm import module_names, recompute_batch_norm
from pipeline.engine.distributed import bare
from pipeline.engine.state import save_checkpoint
from pipeline.engine.trainer import Callback, Trainer
from pipeline.schema import Section

if TYPE_CHECKING:  # imported where used: a run that never needs it skips ~1 s
    from timm.utils import ModelEmaV3

log = logging.getLogger(__name__)


class EMAConfig(Section):
    """Exponential moving average of the weights (timm ModelEmaV3), used for validation,
    the best checkpoint and the predictions."""

    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True  # ramp the decay up over the first updates


class SWAConfig(Section):
    """Stochastic weight averaging from ``start_epoch`` (1-based) to the end; the averaged
    weights (batch-norm statistics recomputed) are the fold's final model."""

    start_epoch: int = Field(ge=1)
    lr: float | None = Field(None, gt=0)  # constant lr while averaging; None keeps the schedule


class EarlyStoppingConfig(Section):
    """Stop a fold when the validation score has not improved for ``patience`` epochs."""

    patience: int = Field(ge=1)
    min_delta: float = Field(0.0, ge=0)


class EMA(Callback):
    """Exponential moving average of the weights (timm ``ModelEmaV3``), updated after every
    optimizer step; validation, the best checkpoint and predictions use the average."""

    order = 10

    def __init__(self, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.ema: ModelEmaV3 | None = None
        self.updates = 0
        self._pending: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from timm.utils import ModelEmaV3  # here: timm (with torchvision) costs ~1 s to import

        self.ema = ModelEmaV3(trainer.unwrapped, decay=self.decay, use_warmup=self.warmup)
        if self._pending is not None:
            self.ema.module.load_state_dict(self._pending)
            self._pending = None

    def on_after_step(self, trainer: Trainer) -> None:
        assert self.ema is not None
        self.updates += 1
        self.ema.update(trainer.unwrapped, step=self.updates)

    def eval_model(self, trainer: Trainer) -> nn.Module | None:
        return self.ema.module if self.ema is not None else None

    def state_dict(self) -> dict[str, Any]:
        assert self.ema is not None
        return {"weights": self.ema.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state["weights"]
        self.updates = state["updates"]


class SWA(Callback):
    """Stochastic weight averaging: average the weights at the end of every epoch from
    ``start_epoch`` on; at the end, recompute batch-norm statistics and make the average the
    fold's model (``best.pt``). With ``lr`` set, the learning rate is held there meanwhile."""

    order = 20

    def __init__(self, start_epoch: int, lr: float | None = None) -> None:
        self.start_epoch = start_epoch
        self.lr = lr
        self.averaged: AveragedModel | None = None
        self._pending: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.averaged = AveragedModel(trainer.unwrapped)
        if self._pending is not None:
            self.averaged.load_state_dict(self._pending)
            self._pending = None

    def _averaging(self, trainer: Trainer) -> bool:
        return trainer.epoch + 1 >= self.start_epoch

    def _hold_lr(self, trainer: Trainer) -> None:
        if self.lr is not None and self._averaging(trainer):
            for group in trainer.optimizer.param_groups:
                group["lr"] = self.lr

    def on_epoch_start(self, trainer: Trainer) -> None:
        # the first update of an averaged epoch too: the schedule set its lr after the last
        # update of the epoch before (a per-epoch schedule, at that epoch's end)
        self._hold_lr(trainer)

    def on_after_step(self, trainer: Trainer) -> None:
        self._hold_lr(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        assert self.averaged is not None
        if trainer.epoch >= self.start_epoch:
            self.averaged.update_parameters(trainer.unwrapped)

    def on_fit_end(self, trainer: Trainer) -> None:
        assert self.averaged is not None and trainer.train_loader is not None
        if int(self.averaged.n_averaged) == 0:
            # early stopping ended the fit before start_epoch: the average holds the initial
            # weights, so the best epoch's checkpoint stays the fold's model
            log.warning("%s: SWA averaged nothing (the fit stopped after epoch %d, before "
                        "swa.start_epoch %d); keeping the best epoch's weights", trainer.desc,
                        trainer.epoch, self.start_epoch)
            return
        source = trainer.train_loader
        # a fixed order, so a resumed fold gets the same statistics; a last batch of one row
        # is left out, as training leaves it (BatchNorm cannot train on one row)
        size = source.batch_size or 1
        loader = DataLoader(source.dataset, batch_size=size, shuffle=False,
                            collate_fn=source.collate_fn,
                            drop_last=drops_lone_row(len(source.dataset), size, shuffle=True))
        device = trainer.accelerator.device
        frozen = module_names(trainer.unwrapped, trainer.frozen)
        recompute_batch_norm(({k: v.to(device) for k, v in b.items()} for b in loader),
                             self.averaged.module, frozen)
        assert trainer.score_fn is not None and trainer.valid_loader is not None
        score = float(trainer.score_fn(trainer.predict(trainer.valid_loader,
                                                       model=self.averaged.module)))
        trainer.history.epochs.append({"epoch": trainer.epoch, "swa": True, "score": score})
        trainer.history.best_score, trainer.history.best_epoch = score, trainer.epoch
        trainer.resume_points.wait()  # the fit's own best.pt lands first, then this one
        save_checkpoint(trainer.checkpoint_dir / "best.pt",
                        {"model": self.averaged.module.state_dict(), "epoch": trainer.epoch,
                         "score": score})
        log.info("%s: SWA of epochs %d-%d: score %.5f", trainer.desc, self.start_epoch,
                 trainer.epoch, score)

    def state_dict(self) -> dict[str, Any]:
        assert self.averaged is not None
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state["averaged"]


class Snapshots(Callback):
    """Snapshot ensemble: save the weights at the end of each learning-rate cycle
    (``snapshot_<k>.pt``); the fold predicts with the mean of their predictions."""

    order = 30

    def __init__(self, cycle_end_epochs: list[int]) -> None:
        self.cycle_end_epochs = sorted(set(cycle_end_epochs))

    def on_epoch_end(self, trainer: Trainer) -> None:
        if trainer.epoch in self.cycle_end_epochs:
            k = self.cycle_end_epochs.index(trainer.epoch)
            path = trainer.checkpoint_dir / f"snapshot_{k}.pt"
            weights = bare(trainer.eval_model()).state_dict()
            save_checkpoint(path, {"model": weights, "epoch": trainer.epoch})
            trainer.history.epochs[-1]["snapshot"] = k


def snapshot_paths(fold_dir: Path) -> list[Path]:
    """A fold's snapshot checkpoints in cycle order."""
    return sorted(fold_dir.glob("snapshot_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


class EarlyStopping(Callback):
    """Stop the fit when the score has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 40

    def __init__(self, patience: int, min_delta: float, greater_is_better: bool) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if greater_is_better else -1.0
        self.best: float | None = None
        self.waited = 0

    def on_epoch_end(self, trainer: Trainer) -> None:
        epoch = trainer.history.epochs[-1]
        if epoch["epoch"] < trainer.best_from:  # a warm-up, which no checkpoint comes from
            return
        score = self.sign * epoch["score"]
        # a non-finite score is no improvement, and never becomes the one to beat
        if math.isfinite(score) and (self.best is None or score > self.best + self.min_delta):
            self.best, self.waited = score, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.should_stop = True
            log.info("%s: early stop after epoch %d (no gain for %d epochs)", trainer.desc,
                     trainer.epoch, self.waited)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.waited = state["best"], state["waited"]


def cycle_end_epochs(stage_epochs: list[int], stage_cycles: list[tuple[float, float] | None],
                     ) -> list[int]:
    """Global epochs (1-based) where a warm-restart cycle ends, for stages given as
    (cycle_epochs, cycle_mul), or None for stages without restarts."""
    ends, offset = [], 0
    for epochs, cycle in zip(stage_epochs, stage_cycles, strict=True):
        if cycle is not None:
            length, mul, at = cycle[0], cycle[1], 0.0
            while True:
                at += length
                end = round(at)
                if end >= epochs:
                    ends.append(offset + epochs)
                    break
                ends.append(offset + end)
                length *= mul
        offset += epochs
    return ends
