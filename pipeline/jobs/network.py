"""Train one network on the rows outside one fold: inputs, model, recipe, fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from pipeline.artifacts import write_parquet
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.data.datasets import CompetitionDataset, ModelInputs
from pipeline.data.memory_loader import build_fold_loader
from pipeline.data.text_features import TfidfColumns
from pipeline.data.time_folds import training_rows
from pipeline.engine.auto_batch import auto_batch_note, eval_batch_size
from pipeline.engine.callbacks.consistency import build_consistency, over_unlabelled
from pipeline.engine.callbacks.stop_after import StopAfter
from pipeline.engine.distributed import agree, is_main
from pipeline.engine.recipe import build_callbacks, build_stage_plans
from pipeline.engine.state import seed_everything
from pipeline.engine.trainer import Trainer
from pipeline.errors import ConfigError
from pipeline.job_seed import job_seed
from pipeline.jobs.inputs import FoldPrep, build_fold_network, fold_prep, with_pseudo_rows
from pipeline.metrics import get_metric
from pipeline.models.multitask import with_task_plans
from pipeline.models.network import model_inputs
from pipeline.runs import FULL_FIT, LAST_EPOCH_OOF, fold_dir, fold_label, pseudo_path

log = logging.getLogger(__name__)
WATCHED_ROWS = 512  # about as many of a full model's own rows scored after each epoch


@dataclass(frozen=True)
class TrainedFold:
    """A fold's network as its fit left it, for predicting in the same process: no model
    rebuilt, no ``best.pt`` read back, and no second pass over the held-out rows, whose raw
    outputs the chosen (last) epoch's validation already computed with these weights."""

    trainer: Trainer  # its eval model holds the weights written to best.pt
    prep: FoldPrep
    inputs: ModelInputs
    oof_outputs: np.ndarray  # raw outputs on the fold's held-out rows, in their order

    def finish(self) -> None:
        """Block until the fit's last checkpoint files are on disk (before a record vouches
        for them)."""
        self.trainer.resume_points.wait()


def train_network_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any,
) -> dict[str, Any]:
    """Train one network on the rows outside ``fold``; returns its fit history."""
    result, trained = fit_network_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
    if trained is not None:
        trained.finish()
    return result


def _warm_capable(cfg: ExperimentConfig) -> bool:
    """Whether the fit's final weights may predict in place: not when a callback replaces
    them at the end (SWA), several checkpoints predict (snapshots), members predict apart.
    In a multi-process launch every rank holds the same weights (DDP; BatchNorm statistics
    shared before predicting), so each predicts its share in place too."""
    return cfg.train.swa is None and not cfg.train.snapshots and cfg.train.ensemble is None


def fit_network_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any, epochs: int | None = None,
) -> tuple[dict[str, Any], TrainedFold | None]:
    """Train one network on the rows outside ``fold``; returns its fit history and, when its
    last epoch is the chosen one, the trained fold to predict with (its checkpoint files may
    still be on their way to the disk: :meth:`TrainedFold.finish`).

    The job seeds python, numpy and torch with ``seed * 1000 + fold`` (:func:`job_seed`)
    before anything draws from them, so the same (seed, fold) trains the same weights,
    resumed or not.

    ``fold`` :data:`pipeline.runs.FULL_FIT`: the seed's full model, trained on every row for
    ``epochs`` epochs of the recipe (no early stopping) and kept at its last; its epochs are
    scored on an even sample of its own rows (a fit's progress, not a held-out score).
    """
    full = fold == FULL_FIT
    out = fold_dir(cfg, seed, fold)
    run_seed = job_seed(seed, fold)
    seed_everything(run_seed)
    task = cfg.competition.task
    train_rows = training_rows(comp, folds, fold, cfg.folds.gap)  # purged under 'gap'
    valid_rows = (train_rows[::max(1, len(train_rows) // WATCHED_ROWS)] if full
                  else np.flatnonzero(folds == fold))
    # rank 0 fits and writes it; a multi-process launch hands its result to the other ranks
    text = (TfidfColumns.from_config(cfg.model.tabular.text, dense=True, seed=run_seed)
            if cfg.model.reads_tfidf and comp.cfg.text_columns else None)
    prep = agree(fold_prep, out, comp, train_rows, cfg.model.target_transform, text,
                 cfg.train.bounded(task))
    inputs = model_inputs(comp, cfg.model, tokenizer, prep.tabular)
    y = prep.standardise(task, comp.targets)
    aug = cfg.train.augment
    active = aug if (aug.image or aug.text or aug.tabular) else None
    train_ds: Dataset[Any] = CompetitionDataset(comp.train.iloc[train_rows], inputs,
                                                y[train_rows], active)
    if cfg.pseudo is not None:
        train_ds = with_pseudo_rows(comp, pd.read_parquet(pseudo_path(cfg, fold)), inputs,
                                    y[train_rows], train_rows, prep, active)
    valid_ds = CompetitionDataset(comp.train.iloc[valid_rows], inputs, y[valid_rows])
    device = accelerator.device
    valid_loader = build_fold_loader(
        valid_ds, cfg.predict.batch_size or eval_batch_size(cfg.train.batch_size), False,
        cfg.train.num_workers, None, cfg.train.loader, device)
    if cfg.train.batch_size == "auto":  # sized from the rows the loader draws, pseudo included
        log.info("%s: %s", fold_label(cfg, seed, fold), auto_batch_note(
            len(train_ds), cfg.train.grad_accum_steps, cfg.train.optimizer))  # type: ignore[arg-type]

    model = build_fold_network(cfg, comp, prep.tabular, run_seed)
    if cfg.train.compile:
        model.compile()  # in place: the state dict keeps its names, checkpoints stay portable
    metric = get_metric(cfg.competition.metric, comp.scored_values)
    y_valid = comp.targets[valid_rows]
    if not metric.ranks_on(task, y_valid, comp.n_outputs):
        # every epoch would score NaN (or the same): the first epoch would stay the best and
        # early stopping would end the fit after `patience` epochs. Log loss (regression:
        # RMSE) of the same predictions ranks them, whatever the training loss or SWA
        fallback = get_metric("rmse" if task == "regression" else "log_loss")
        log.warning("%s: %s is undefined on this fold's validation rows (e.g. a single "
                    "class); its epochs are chosen by %s", fold_label(cfg, seed, fold),
                    metric.name, fallback.name)
        metric = fallback
    generator = torch.Generator()
    plans = build_stage_plans(cfg.train, cfg.model, task, model, train_ds, generator,
                              metric.greater_is_better, device,
                              masked=cfg.competition.missing_targets == "mask")
    plans = with_task_plans(plans, model)  # + auxiliary tasks' losses (multi-task)
    cons, first_unlabelled = cfg.train.consistency, cfg.train.unlabelled_from
    pool = comp.unlabelled_pool  # the test rows (+ train rows without a target)
    plans = over_unlabelled(plans, cons, len(pool), first_unlabelled,  # epoch_over
                            appended=cfg.train.appends_consistency_stage)

    label, lr = fold_label(cfg, seed, fold), cfg.train.optimizer.lr

    def score(outputs: np.ndarray) -> float:
        if not np.isfinite(np.asarray(outputs, dtype=np.float64)).all():
            # NaN weights stay NaN, so no later epoch recovers; scored, they were a metric's
            # 'Input contains NaN' traceback, or argmax's class 0 and 'folds incomplete'
            raise ConfigError(f"{label}: the network's outputs on the validation rows are NaN "
                              "or infinite: training diverged. Lower the learning rate "
                              f"('train.optimizer.lr', {lr:g}) or clip the gradients "
                              "('train.max_grad_norm')")
        return metric(y_valid, prep.predictions(task, outputs))

    encoder_kinds = [e.kind for e in cfg.model.encoders]
    callbacks = build_callbacks(cfg.train.model_copy(update={"early_stopping": None}) if full
                                else cfg.train, encoder_kinds, metric.greater_is_better)
    if full:
        assert epochs is not None
        callbacks.append(StopAfter(epochs))
    if cons is not None:  # the unlabelled rows: test rows, and train rows kept without a
        # target under 'competition.unlabelled_train_rows: unlabelled'
        callbacks.append(build_consistency(
            cons, task, CompetitionDataset(pool, inputs), active, encoder_kinds,
            comp.n_outputs, first_unlabelled, run_seed * 100 + 7, cfg.train.num_workers,
            cfg.train.loader))
    # 'best' or 'last', the config's 'auto' resolved; a full model: its last epoch
    predicting = "last" if full else cfg.train.predicting_epoch
    trainer = Trainer(model, accelerator, cfg.train.max_grad_norm, callbacks,
                      desc=fold_label(cfg, seed, fold), checkpoint=predicting,
                      precise_bn=cfg.train.precise_bn, metric_name=metric.name,
                      resume_every=cfg.train.resume_every,
                      channels_last=cfg.train.channels_last,
                      # the unlabelled rows are what the run is for: its supervised warm-up
                      # epochs never predict, however a few validation rows score them
                      best_from=first_unlabelled, later_ties=cons is not None)
    trainer.defer_writes = _warm_capable(cfg)
    history = trainer.fit(plans, valid_loader, score, metric.greater_is_better, out,
                          generator, run_seed * 100)
    trained = None
    chosen = trainer.epoch if predicting == "last" else history.best_epoch
    if trainer.defer_writes and chosen == trainer.epoch and history.last_outputs is not None:
        trained = TrainedFold(trainer, prep, inputs, history.last_outputs)
    else:
        trainer.resume_points.wait()  # best.pt is read back to predict
    trainer.optimizer = trainer.schedule = None  # serialised already; frees the device
    if trained is None:  # else prediction in place frees it once done (~0.1 s a call)
        accelerator.free_memory()
    result = {"best_epoch": history.best_epoch, "best_score": history.best_score,
              "checkpoint": predicting, "epochs": history.epochs}
    if history.last_outputs is not None and not full:  # the last epoch's OOF: no epoch
        # was chosen on it (a full model's scored rows are its own)
        last = prep.predictions(task, history.last_outputs)
        frame = pd.DataFrame(last, columns=comp.pred_columns)
        frame.insert(0, cfg.competition.id_column,
                     comp.train[cfg.competition.id_column].to_numpy()[valid_rows])
        if is_main():  # every rank holds these rows (gathered); rank 0 writes them
            write_parquet(out / LAST_EPOCH_OOF, frame)
        result["last_epoch_score"] = metric(y_valid, last)
    return result, trained
