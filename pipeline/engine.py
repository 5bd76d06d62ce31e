"""The training engine: one loop for every model, run through Hugging Face Accelerate.

``Trainer.fit`` trains for the configured epochs, scores the validation rows after each
epoch, keeps the best weights (``best.pt``) and saves a resume point (``last.pt``: weights,
optimizer, scheduler, RNG states) after every epoch, so a killed fold resumes where it
stopped and ends with the same weights as an uninterrupted one. Tricks plug into the hooks
of :class:`Callback`; they are not copies of the loop.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


class Callback:
    """No-op hooks of the training loop; subclasses override what they need."""

    order = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before each training epoch."""

    def on_before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """After the loss of a batch, before its backward pass."""

    def on_after_step(self, trainer: Trainer) -> None:
        """After each optimizer update."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After each epoch's validation."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in the resume point."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class FitHistory:
    """Per-epoch record of a fit."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float | None = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file, so a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def show_progress() -> bool:
    """Progress bars unless PIPELINE_PROGRESS=0."""
    return os.environ.get("PIPELINE_PROGRESS", "1") != "0"


class Trainer:
    """Trains one model on one fold; scores it after every epoch on the validation rows.

    Args:
        model: maps a batch dict to outputs.
        optimizer: a torch optimizer over the model's parameters.
        scheduler: a timm scheduler stepped after every optimizer update (or None).
        loss_fn: ``loss_fn(outputs, batch) -> scalar``.
        accelerator: device placement, mixed precision, gradient accumulation.
        epochs: number of passes over the training rows.
        max_grad_norm: clip the gradient norm to this, when set.
        callbacks: hooks into the loop.
        desc: progress-bar label (e.g. "seed 0 fold 1/5").
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor],
        accelerator: Accelerator,
        epochs: int,
        max_grad_norm: float | None = None,
        callbacks: list[Callback] | None = None,
        desc: str = "",
    ) -> None:
        self.accelerator = accelerator
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        self.loss_fn = loss_fn
        self.epochs = epochs
        self.max_grad_norm = max_grad_norm
        self.callbacks = sorted(callbacks or [], key=lambda c: c.order)
        self.desc = desc
        self.epoch = 0
        self.num_updates = 0
        self.history = FitHistory()

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def train_epoch(self, loader: DataLoader[Batch]) -> float:
        """One pass over ``loader``; returns the mean training loss."""
        self.model.train()
        acc = self.accelerator
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{self.desc} epoch {self.epoch + 1}/{self.epochs}",
                   leave=False, disable=not show_progress(), mininterval=1.0, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            batch = self._to_device(batch)
            with acc.accumulate(self.model):
                with acc.autocast():
                    outputs = self.model(batch)
                    loss = self.loss_fn(outputs, batch)
                self._call("on_before_backward", loss)
                acc.backward(loss)
                if acc.sync_gradients and self.max_grad_norm:
                    acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if acc.sync_gradients:
                    self.num_updates += 1
                    if self.scheduler is not None:
                        self.scheduler.step_update(self.num_updates)
                    self._call("on_after_step")
            total += loss.item()
            count += 1
            if step % 10 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}",
                                lr=f"{self.optimizer.param_groups[-1]['lr']:.2e}", refresh=False)
        return total / max(count, 1)

    @torch.no_grad()
    def predict(
        self, loader: DataLoader[Batch], transform: Callable[[Batch], Batch] | None = None
    ) -> np.ndarray:
        """Raw model outputs for every row of ``loader`` (in order), as float64."""
        self.model.eval()
        outputs = []
        for batch in loader:
            batch = self._to_device(batch)
            if transform is not None:
                batch = transform(batch)
            with self.accelerator.autocast():
                out = self.model(batch)
            outputs.append(out.float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float64)

    def _to_device(self, batch: Batch) -> Batch:
        device = self.accelerator.device
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def _resume_state(self) -> dict[str, Any]:
        return {
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "num_updates": self.num_updates,
            "history": self.history,
            "rng": _rng_state(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    def _load_resume_state(self, state: dict[str, Any]) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.num_updates = state["num_updates"]
        self.history = state["history"]
        _set_rng_state(state["rng"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=True):
            cb.load_state_dict(cb_state)

    def fit(
        self,
        train_loader: DataLoader[Batch],
        valid_loader: DataLoader[Batch],
        score_fn: Callable[[np.ndarray], float],
        greater_is_better: bool,
        checkpoint_dir: Path,
        shuffle_generator: torch.Generator | None = None,
        shuffle_seed: int = 0,
    ) -> FitHistory:
        """Train, validate every epoch, keep the best weights; resume from ``last.pt``.

        ``score_fn`` maps validation outputs to the competition score. The shuffle order of
        epoch ``e`` comes from ``shuffle_seed + e``, so a resumed run sees the same batches.
        """
        last, best = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
        if last.is_file():
            self._load_resume_state(torch.load(last, map_location="cpu", weights_only=False))
            log.info("%s: resuming after epoch %d", self.desc, self.epoch)
        self._call("on_fit_start")
        while self.epoch < self.epochs:
            start = time.perf_counter()
            if shuffle_generator is not None:
                shuffle_generator.manual_seed(shuffle_seed + self.epoch)
            self._call("on_epoch_start")
            train_loss = self.train_epoch(train_loader)
            outputs = self.predict(valid_loader)
            score = float(score_fn(outputs))
            record = {"epoch": self.epoch + 1, "train_loss": train_loss, "score": score,
                      "lr": float(self.optimizer.param_groups[-1]["lr"]),
                      "seconds": time.perf_counter() - start}
            self.history.epochs.append(record)
            improved = self.history.best_score is None or (
                score > self.history.best_score if greater_is_better
                else score < self.history.best_score
            )
            if improved:
                self.history.best_score, self.history.best_epoch = score, self.epoch + 1
                save_checkpoint(best, {"model": self.accelerator.unwrap_model(self.model)
                                       .state_dict(), "epoch": self.epoch + 1, "score": score})
            log.info("%s epoch %d/%d: train_loss %.4f score %.5f%s (%.1fs)", self.desc,
                     self.epoch + 1, self.epochs, train_loss, score, " *" if improved else "",
                     record["seconds"])
            self.epoch += 1
            self._call("on_epoch_end")
            save_checkpoint(last, self._resume_state())
        self._call("on_fit_end")
        return self.history
