"""The training engine: one loop for every model, run through Hugging Face Accelerate.

``Trainer.fit`` runs the stages of a recipe (each with its own loader, optimizer, schedule,
loss and frozen parts), scores the validation rows after each epoch, keeps the best weights
(``best.pt``) and saves resume points (``last.pt``: weights, optimizer, schedule, callback
and RNG states; when, see :mod:`pipeline.engine.resume`), so a killed fold resumes where it
stopped and ends with the same weights as an uninterrupted one. The loop never waits for the
device inside an epoch: the loss is summed there and read once per epoch. Tricks (EMA, SWA,
snapshots, early stopping) plug into the hooks of :class:`Callback`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.data.datasets import Batch
from pipeline.engine import distributed
from pipeline.engine.batchnorm import precise_batch_norm
from pipeline.engine.distributed import bare
from pipeline.engine.evaluate import predict_rows
from pipeline.engine.losses import LossFn
from pipeline.engine.plan import FitHistory, StagePlan, apply_freeze, show_progress
from pipeline.engine.resume import ResumePoints, load_optimizer_state
from pipeline.engine.state import rng_state, set_rng_state
from pipeline.engine.steps import autocast, backward, clip_gradients, update

log = logging.getLogger(__name__)


class Callback:
    """No-op hooks of the training loop; subclasses override what they need."""

    order = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before each training epoch."""

    def transform_batch(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> Batch:
        """Before the forward pass of a training batch; may return a changed batch (e.g.
        adversarial inputs)."""
        return batch

    def training_loss(self, trainer: Trainer, batch: Batch,
                      loss_fn: LossFn) -> torch.Tensor | None:
        """The loss of a training batch in place of ``loss_fn(model(batch), batch)`` (e.g.
        with an unlabelled term), or None; the first callback to return one wins."""
        return None

    def on_before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """After the loss of a batch, before its backward pass."""

    def on_after_backward(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> None:
        """After the backward pass, before the optimizer step; may add gradients (e.g. of
        an adversarial loss on perturbed weights or embeddings)."""

    def on_after_step(self, trainer: Trainer) -> None:
        """After each optimizer update."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After each epoch's validation (``trainer.history`` holds its record)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch."""

    def eval_model(self, trainer: Trainer) -> nn.Module | None:
        """The weights to validate and checkpoint instead of the trained ones (EMA), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State to save in the resume point."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class Trainer:
    """Trains one model on one fold; scores it after every epoch on the validation rows.

    Args:
        model: maps a batch dict to outputs.
        accelerator: device placement and mixed precision.
        max_grad_norm: clip the gradient norm to this, when set.
        callbacks: hooks into the loop.
        desc: progress-bar and log label (e.g. "seed 0 fold 1/5").
        checkpoint: which epoch's weights become the fold's model (``best.pt``): the
            ``best`` validation score's, or the ``last`` epoch's.
        precise_bn: before each validation, recompute the batch-norm statistics of the
            evaluated weights on this many batches of training rows (0: keep the running
            averages, which lag the weights; see :mod:`pipeline.engine.batchnorm`).
        resume_every: seconds between resume points (0: after every epoch); the last
            epoch's is always written.
        channels_last: on a GPU, keep the model's weights and 4-D image batches in the
            channels-last layout (faster convolutions in mixed precision).
        best_from, later_ties: the first epoch ``best`` may choose (a consistency run's
            first with the unlabelled loss); whether a tie goes to the later epoch (there:
            more unlabelled passes, which a few dozen validation rows cannot tell apart).
    """

    def __init__(
        self,
        model: nn.Module,
        accelerator: Accelerator,
        max_grad_norm: float | None = None,
        callbacks: list[Callback] | None = None,
        desc: str = "",
        checkpoint: str = "best",
        precise_bn: int = 0,
        metric_name: str = "score",
        resume_every: float = 0.0,
        channels_last: bool = False,
        best_from: int = 1,
        later_ties: bool = False,
    ) -> None:
        self.accelerator = accelerator
        self.best_from, self.later_ties = best_from, later_ties
        self.resume_points = ResumePoints(resume_every)
        self.channels_last = channels_last and accelerator.device.type == "cuda"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.metric_name = metric_name  # how the per-epoch log line names the score
        self.checkpoint, self.precise_bn = checkpoint, precise_bn
        # device_placement given, Accelerate skips its probe for sharded (DTensor) weights,
        # which imports torch.distributed.tensor (~0.5 s) for models that never have them
        self.model = accelerator.prepare_model(model,
                                               device_placement=accelerator.device_placement)
        self.max_grad_norm = max_grad_norm
        self.callbacks = sorted(callbacks or [], key=lambda c: c.order)
        self.desc = desc
        self.epoch = 0  # completed epochs over all stages
        self.stage, self.stage_updates = 0, 0
        self.stage_epoch = 0  # completed epochs of the current stage
        self.total_epochs = 0
        self.frozen: list[nn.Module] = []
        self.history = FitHistory()
        self.should_stop, self.grad_accum_steps = False, 1
        self.optimizer: Any = None
        self.schedule: Any = None
        self.train_loader: DataLoader[Batch] | None = None
        self.valid_loader: DataLoader[Batch] | None = None
        self.checkpoint_dir = Path(".")
        self.score_fn: Callable[[np.ndarray], float] | None = None
        self.valid_loss: float | None = None  # the last predict's mean loss, when asked
        self.defer_writes = False  # fit() returns before its last checkpoint files land

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    @property
    def unwrapped(self) -> nn.Module:
        """The trained model without Accelerate's wrapping."""
        # not accelerator.unwrap_model: it asks torch._dynamo whether the model is compiled,
        # importing it (~1 s); models here are only ever wrapped by DDP (compile is in place)
        return bare(self.model)

    def eval_model(self) -> nn.Module:
        """The weights to validate and checkpoint: a callback's (EMA) or the trained ones."""
        for cb in reversed(self.callbacks):
            model = cb.eval_model(self)
            if model is not None:
                return model
        return self.model

    def _to_device(self, batch: Batch) -> Batch:
        device = self.accelerator.device
        if not self.channels_last:
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return {k: v.to(device, non_blocking=True, memory_format=torch.channels_last)
                if v.dim() == 4 and v.is_floating_point() else v.to(device, non_blocking=True)
                for k, v in batch.items()}

    def train_epoch(
        self, loader: DataLoader[Batch], optimizer: Any, schedule: Any, loss_fn: LossFn,
        grad_accum_steps: int = 1,
    ) -> float:
        """One pass over ``loader``; returns the mean training loss."""
        self.model.train()
        for module in self.frozen:
            module.eval()
        # callbacks scale their extra losses by the current window's size, as the loop does
        acc = self.accelerator
        # summed on the device: reading each step's loss would make the host wait for it
        total, count, n_batches = torch.zeros((), device=acc.device), 0, len(loader)
        progress = show_progress()
        # the bar counts batches but never touches the loader: tqdm(loader) draws from a
        # DataLoader's generator when built, so the order would hang on tqdm's version
        bar = tqdm(total=n_batches, leave=False, disable=not progress, mininterval=1.0,
                   desc=f"{self.desc} epoch {self.epoch + 1}/{self.total_epochs or '?'}",
                   dynamic_ncols=True)
        for step, batch in enumerate(loader):
            # The last window of an epoch may hold fewer micro-batches than grad_accum_steps;
            # dividing by its own size keeps its update a mean, not a shrunken one.
            window_start = step - step % grad_accum_steps
            self.grad_accum_steps = min(grad_accum_steps, n_batches - window_start)
            # batch_size is the global batch: a multi-process launch trains this rank's share
            batch, share = distributed.local_rows(batch)  # (DDP syncs at a window's end)
            distributed.sync_gradients(self.model, (step + 1) % grad_accum_steps == 0
                                       or step + 1 == n_batches)
            batch = self._to_device(batch)
            for cb in self.callbacks:
                batch = cb.transform_batch(self, batch, loss_fn)
            with autocast(acc):
                loss = self._training_loss(batch, loss_fn)
            loss = loss if share is None else loss * share  # DDP's mean: the batch's loss
            self._call("on_before_backward", loss)
            backward(acc, loss / self.grad_accum_steps if self.grad_accum_steps > 1 else loss)
            self._call("on_after_backward", batch, loss_fn)
            if (step + 1) % grad_accum_steps == 0 or step + 1 == n_batches:
                if self.max_grad_norm:
                    clip_gradients(acc, optimizer, self.model.parameters(), self.max_grad_norm)
                update(optimizer)
                self.stage_updates += 1
                if schedule is not None:
                    schedule.after_update(self.stage_updates)
                self._call("on_after_step")
            total += loss.detach().float()
            count += 1
            bar.update(1)
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{total.item() / count:.4f}",
                                lr=f"{optimizer.param_groups[-1]['lr']:.2e}", refresh=False)
        bar.close()
        return distributed.reduce_mean(total).item() / max(count, 1)

    def _training_loss(self, batch: Batch, loss_fn: LossFn) -> torch.Tensor:
        for cb in self.callbacks:
            loss = cb.training_loss(self, batch, loss_fn)
            if loss is not None:
                return loss
        return loss_fn(self.model(batch), batch)

    def predict(
        self, loader: DataLoader[Batch], transform: Callable[[Batch], Batch] | None = None,
        model: nn.Module | None = None, loss_fn: LossFn | None = None,
    ) -> np.ndarray:
        """Raw outputs of ``model`` (default: :meth:`eval_model`) for every row, as float64,
        in the rows' order (see :func:`pipeline.engine.evaluate.predict_rows`). With
        ``loss_fn``, their mean loss goes to ``valid_loss``."""
        model = model if model is not None else self.eval_model()
        result, self.valid_loss = predict_rows(model, loader, self.accelerator,
                                               self._to_device, transform, loss_fn)
        return result

    def _start_stage(self, plan: StagePlan) -> None:
        self.frozen = apply_freeze(self.unwrapped, plan.freeze)
        self.optimizer = self.accelerator.prepare_optimizer(plan.make_optimizer())
        updates = math.ceil(len(plan.loader) / plan.grad_accum_steps)
        self.schedule = plan.make_schedule(self.optimizer.optimizer, updates)

    def _resume_state(self, finished: bool = False) -> dict[str, Any]:
        # a finished fit's point resumes only its end: no optimizer state (AdamW's is twice
        # the weights), so the file a fold's end waits for is a third of the size
        live = not finished
        return {
            "model": self.unwrapped.state_dict(), "finished": finished,
            "optimizer": self.optimizer.state_dict() if live else None,
            "schedule": self.schedule.state_dict() if live and self.schedule is not None else None,
            "epoch": self.epoch, "stage": self.stage, "stage_epoch": self.stage_epoch,
            "stage_updates": self.stage_updates, "history": self.history, "rng": rng_state(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            # fp16 (T4, P100) keeps a dynamic loss scale; without it a resumed run would
            # restart at 65536 and part from an uninterrupted one
            "scaler": self.accelerator.scaler.state_dict()
            if self.accelerator.scaler is not None else None,
        }

    def _load_resume_state(self, state: dict[str, Any], plans: list[StagePlan]) -> None:
        self.unwrapped.load_state_dict(state["model"])
        self.epoch, self.stage, self.history = state["epoch"], state["stage"], state["history"]
        self.stage_epoch, self.stage_updates = state["stage_epoch"], state["stage_updates"]
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=True):
            cb.load_state_dict(cb_state)
        if state.get("finished"):  # the fit is over (its last loader for SWA's end)
            self.train_loader = plans[min(self.stage, len(plans) - 1)].loader
            self.stage = len(plans)
        elif self.stage < len(plans):
            self._start_stage(plans[self.stage])
            load_optimizer_state(self.optimizer, state["optimizer"], self.checkpoint_dir)
            if self.schedule is not None:
                self.schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])

    def fit(
        self,
        plans: list[StagePlan],
        valid_loader: DataLoader[Batch],
        score_fn: Callable[[np.ndarray], float],
        greater_is_better: bool,
        checkpoint_dir: Path,
        shuffle_generator: torch.Generator | None = None,
        shuffle_seed: int = 0,
    ) -> FitHistory:
        """Run every stage, validate every epoch, keep the best weights; resume from ``last.pt``.

        ``score_fn`` maps validation outputs to the competition score. The shuffle order of
        epoch ``e`` comes from ``shuffle_seed + e``, so a resumed run sees the same batches.
        """
        self.total_epochs = sum(p.epochs for p in plans)
        self.score_fn = score_fn
        self.valid_loader = valid_loader
        self.checkpoint_dir = checkpoint_dir
        self._start_or_resume(plans)
        self.resume_points.restart_clock()
        self._call("on_fit_start")
        try:
            while self.stage < len(plans) and not self.should_stop:
                plan = plans[self.stage]
                self.train_loader = plan.loader
                while self.stage_epoch < plan.epochs and not self.should_stop:
                    self._seed_epoch(plan, shuffle_generator, shuffle_seed)
                    last = self.stage == len(plans) - 1 and self.stage_epoch + 1 == plan.epochs
                    self._run_epoch(plan, greater_is_better, last)
                if self.should_stop:
                    break
                self._next_stage(plans)
        except BaseException:
            # a killed fit (Ctrl-C, an error) keeps its last resume point: the writer thread
            # is a daemon and dies with the process, so its file must land before we unwind
            self.resume_points.wait()
            raise
        # callbacks' on_fit_end may write best.pt after ours; a caller predicting with the
        # weights in memory lets the last files land meanwhile (resume_points.wait())
        if not self.defer_writes:
            self.resume_points.wait()
        self._call("on_fit_end")
        distributed.barrier()  # rank 0 wrote best.pt; the other ranks read it next
        return self.history

    def _start_or_resume(self, plans: list[StagePlan]) -> None:
        """Continue from ``last.pt`` when a killed fit left one, else start the first stage."""
        last = self.checkpoint_dir / "last.pt"
        if last.is_file():
            self._load_resume_state(torch.load(last, map_location="cpu", weights_only=False),
                                    plans)
            log.info("%s: resuming after epoch %d", self.desc, self.epoch)
        elif plans:
            self._start_stage(plans[0])

    def _seed_epoch(self, plan: StagePlan, generator: torch.Generator | None,
                    shuffle_seed: int) -> None:
        """Seed the coming epoch's shuffle order and augmentation draws from its number."""
        if generator is not None:
            generator.manual_seed(shuffle_seed + self.epoch)
        set_epoch = getattr(plan.loader.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(shuffle_seed + self.epoch)
        distributed.seed_rank_streams(shuffle_seed + self.epoch)

    def _run_epoch(self, plan: StagePlan, greater_is_better: bool, last: bool = False) -> None:
        """Train one epoch, validate, record it, keep the best weights, save a resume point
        (always after the ``last`` epoch or an early stop, else when one is due)."""
        assert self.score_fn is not None and self.valid_loader is not None
        start = time.perf_counter()
        self._call("on_epoch_start")
        train_loss = self.train_epoch(plan.loader, self.optimizer, self.schedule,
                                      plan.loss_fn, plan.grad_accum_steps)
        if self.precise_bn:
            precise_batch_norm(self, plan.loader, self.precise_bn)
        # the main loss alone: auxiliary terms are a training device, not the objective
        outputs = self.predict(self.valid_loader, loss_fn=getattr(plan.loss_fn, "main",
                                                                  plan.loss_fn))
        score = float(self.score_fn(outputs))
        self.history.last_outputs = outputs
        if not math.isfinite(score):
            log.warning("%s epoch %d: the validation score is %s (e.g. a correlation of a "
                        "constant prediction); it counts as the worst score", self.desc,
                        self.epoch + 1, score)
        self.stage_epoch += 1
        self.epoch += 1
        if self.schedule is not None:
            self.schedule.after_epoch(self.stage_epoch, score)
        improved = (self.epoch >= self.best_from and self.history.improves(
            score, greater_is_better, ties=self.later_ties))
        self.history.epochs.append({
            "epoch": self.epoch, "stage": self.stage, "label": plan.label,
            "optimizer": type(self.optimizer.optimizer).__name__,
            "batch_size": plan.loader.batch_size, "updates": self.stage_updates,
            "train_loss": train_loss, "valid_loss": self.valid_loss, "score": score,
            "lr": float(self.optimizer.param_groups[-1]["lr"]),
            "seconds": time.perf_counter() - start,
        })
        if improved:
            self.history.best_score, self.history.best_epoch = score, self.epoch
        if improved or self.checkpoint == "last":
            weights = bare(self.eval_model()).state_dict()
            # checkpoint 'last' hands over the live weights each epoch: no copy needed
            self.resume_points.keep_best(weights, self.epoch, score,
                                         copy=self.checkpoint != "last")
        log.info("%s epoch %d/%d: train_loss %.4f, valid_loss %.4f, valid %s %.5f%s (%.1fs)",
                 self.desc, self.epoch, self.total_epochs, train_loss, self.valid_loss,
                 self.metric_name, score,
                 " (best so far)" if improved else "", self.history.epochs[-1]["seconds"])
        self._call("on_epoch_end")
        end = last or self.should_stop
        self.resume_points.save(self.checkpoint_dir, lambda: self._resume_state(finished=end),
                                force=end, final=end and self.defer_writes)

    def _next_stage(self, plans: list[StagePlan]) -> None:
        self.stage += 1
        self.stage_epoch, self.stage_updates = 0, 0
        if self.stage < len(plans):
            self._start_stage(plans[self.stage])
