"""Train stage: for each seed and fold, train on the other folds, predict the held-out fold
(OOF) and the test set, then gather every fold into the run's ``oof.parquet`` and
``test.parquet``. Finished folds are skipped; a fold cut off mid-way resumes."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import Dataset

from pipeline import folds as folds_stage
from pipeline import pseudo as pseudo_stage
from pipeline.adversarial import build_adversarial
from pipeline.artifacts import (
    RunMeta,
    read_json,
    read_meta,
    write_json,
    write_meta,
    write_parquet,
    write_yaml,
)
from pipeline.callbacks import EMA, SWA, EarlyStopping, Snapshots, cycle_end_epochs
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig, OptimizerConfig, SchedulerConfig
from pipeline.consistency import build_consistency
from pipeline.contrastive import with_aux_losses
from pipeline.data import (
    CombinedDataset,
    CompetitionDataset,
    TabularEncoder,
    build_loader,
    model_inputs,
)
from pipeline.engine import Callback, StagePlan, Trainer, seed_everything
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.losses import build_loss
from pipeline.metrics import get_metric
from pipeline.models import build_model, build_tokenizer
from pipeline.optim import Schedule, build_optimizer, build_scheduler, parameter_groups
from pipeline.predict import predict_fold, prediction_hash
from pipeline.pseudo import pseudo_path
from pipeline.sklearn_models import train_sklearn_fold

log = logging.getLogger(__name__)


def fold_dir(cfg: ExperimentConfig, seed: int, fold: int) -> Path:
    """``<run>/seed{seed}/fold{fold}``."""
    return cfg.run_dir / f"seed{seed}" / f"fold{fold}"


def n_outputs(comp: Competition) -> int:
    """Width of the model output: classes, 1 for binary, else one per target column."""
    if comp.cfg.task == "multiclass":
        return len(comp.classes)
    return 1 if comp.cfg.task == "binary" else len(comp.cfg.target_columns)


def build_accelerator(cfg: ExperimentConfig) -> Accelerator:
    """Accelerator with the configured precision ('auto': bf16/fp16 on GPU, none on CPU)."""
    precision = cfg.train.mixed_precision
    if precision == "auto":
        precision = "no"
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # One process may train several configs (the demo, a benchmark, a notebook): each gets
    # its own precision and device rather than an error for differing from the first.
    AcceleratorState._reset_state(reset_partial_state=True)
    # accumulation is the engine's (per stage), so Accelerate must not scale the loss too
    accelerator = Accelerator(mixed_precision=precision)
    if accelerator.num_processes > 1:
        raise PipelineError(
            "the stages run in one process (one CPU or GPU); a multi-process launch "
            f"({accelerator.num_processes} processes) is not supported"
        )
    return accelerator


def prepare_run_dir(cfg: ExperimentConfig, comp: Competition) -> RunMeta:
    """Create the run folder with its config snapshot; refuse one made by another config."""
    run_dir = cfg.run_dir
    snapshot = run_dir / "config.yaml"
    meta = RunMeta(
        name=cfg.name, task=cfg.competition.task, metric=cfg.competition.metric,
        id_column=cfg.competition.id_column, target_columns=list(cfg.competition.target_columns),
        classes=comp.classes, pred_columns=comp.pred_columns, folds_file=str(cfg.folds_file),
        competition_dir=str(cfg.competition.dir), train_file=cfg.competition.train_file,
        config_hash=cfg.train_hash(),
        sample_submission_file=cfg.competition.sample_submission_file,
    )
    meta_path = run_dir / "run.json"
    if meta_path.is_file():
        old = read_json(meta_path).get("config_hash")
        if old != meta.config_hash:
            raise ConfigError(
                f"{run_dir} holds a run of another config (hash {old}, now {meta.config_hash}); "
                f"change 'name' for a new experiment, or delete {run_dir} to retrain"
            )
    write_yaml(snapshot, cfg.to_dict())
    write_meta(run_dir, meta)
    write_json(run_dir / "env.json", {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.cuda.is_available(), "platform": platform.platform(),
    })
    return meta


def _target_scale(comp: Competition, rows: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std of regression targets on the training rows (identity otherwise)."""
    k = n_outputs(comp)
    if comp.cfg.task != "regression":
        return [0.0] * k, [1.0] * k
    y = comp.targets[rows]
    return y.mean(axis=0).tolist(), (y.std(axis=0) + 1e-12).tolist()


def preprocess_state(comp: Competition, rows: np.ndarray) -> dict[str, Any]:
    """What a fold fits on its training rows: tabular encoder and regression target scale."""
    tab = TabularEncoder(comp.numeric_columns, comp.categorical_columns)
    tab.fit(comp.train.iloc[rows])
    mean, std = _target_scale(comp, rows)
    return {"tabular": tab.state_dict(), "target_mean": mean, "target_std": std}


def build_callbacks(cfg: ExperimentConfig, greater_is_better: bool) -> list[Callback]:
    """The tricks the recipe switches on."""
    tcfg = cfg.train
    callbacks: list[Callback] = []
    if tcfg.ema is not None:
        callbacks.append(EMA(tcfg.ema.decay, tcfg.ema.warmup))
    if tcfg.swa is not None:
        callbacks.append(SWA(tcfg.swa.start_epoch, tcfg.swa.lr))
    if tcfg.snapshots:
        stages = tcfg.resolved_stages()
        cycles = [(s.scheduler.cycle_epochs, s.scheduler.cycle_mul)
                  if s.scheduler is not None and s.scheduler.name == "restarts" else None
                  for s in stages]
        callbacks.append(Snapshots(cycle_end_epochs([s.epochs for s in stages], cycles)))
    adv = tcfg.adversarial
    if adv is not None:
        callbacks.append(build_adversarial(adv, [e.kind for e in cfg.model.encoders],
                                           tcfg.first_epoch(adv.start_epoch, adv.start_stage)))
    if tcfg.early_stopping is not None:
        callbacks.append(EarlyStopping(tcfg.early_stopping.patience,
                                       tcfg.early_stopping.min_delta, greater_is_better))
    return callbacks


def build_stage_plans(
    cfg: ExperimentConfig, model: nn.Module, train_ds: Dataset[Any],
    generator: torch.Generator, greater_is_better: bool,
) -> list[StagePlan]:
    """One ready-to-run plan per stage of the recipe."""
    plans = []
    for stage in cfg.train.resolved_stages():
        assert stage.optimizer and stage.scheduler and stage.loss and stage.batch_size
        optim, sched, loss = stage.optimizer, stage.scheduler, stage.loss
        epochs = stage.epochs

        def make_optimizer(optim: OptimizerConfig = optim) -> torch.optim.Optimizer:
            return build_optimizer(parameter_groups(model, cfg.model, optim), optim)

        def make_schedule(optimizer: torch.optim.Optimizer, updates: int,
                          sched: SchedulerConfig = sched, epochs: int = epochs) -> Schedule:
            return build_scheduler(optimizer, sched, epochs, updates, greater_is_better)

        terms = [(t.name, t.weight, t.params) for t in loss.terms]
        plans.append(StagePlan(
            epochs=epochs,
            loader=build_loader(train_ds, stage.batch_size, True, cfg.train.num_workers,
                                generator),
            make_optimizer=make_optimizer,
            make_schedule=make_schedule,
            loss_fn=with_aux_losses(
                build_loss(loss.name, cfg.competition.task, loss.params, terms), model,
                [(a.name, a.weight, a.params) for a in cfg.train.aux_losses]),
            freeze=list(stage.freeze or []),
            grad_accum_steps=stage.grad_accum_steps or 1,
            label=f"{optim.name} lr={optim.lr:g} bs={stage.batch_size}",
        ))
    return plans


def with_pseudo_rows(
    cfg: ExperimentConfig, comp: Competition, fold: int, inputs: Any, y_train: np.ndarray,
    train_rows: np.ndarray, prep: dict[str, Any], augment: Any,
) -> CombinedDataset:
    """The fold's training rows plus its pseudo-labelled test rows (with their weight).

    Multiclass labels become one-hot rows so hard and soft pseudo-labels share a layout.
    """
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    pseudo = pd.read_parquet(pseudo_path(cfg, fold))
    by_id = comp.test.set_index(comp.test[id_col].astype(str))
    rows = by_id.loc[pseudo[id_col].astype(str)].reset_index(drop=True)
    labels = pseudo[cols].to_numpy(dtype=np.float32)
    if cfg.competition.task == "regression":
        labels = ((labels - np.array(prep["target_mean"])) / np.array(prep["target_std"]))
    if cfg.competition.task == "multiclass":
        y_train = np.eye(len(comp.classes), dtype=np.float32)[y_train]
    real = CompetitionDataset(comp.train.iloc[train_rows], inputs, y_train, augment,
                              np.ones(len(train_rows), dtype=np.float32))
    extra = CompetitionDataset(rows, inputs, labels.astype(np.float32), augment,
                               pseudo["weight"].to_numpy(dtype=np.float32))
    return CombinedDataset([real, extra])


def train_network_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any,
) -> dict[str, Any]:
    """Train one network on the rows outside ``fold``; returns its fit history."""
    out = fold_dir(cfg, seed, fold)
    run_seed = seed * 1000 + fold
    seed_everything(run_seed)
    train_rows, valid_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    prep_path = out / "preprocess.json"
    if not prep_path.is_file():
        write_json(prep_path, preprocess_state(comp, train_rows))
    prep = read_json(prep_path)
    tab = TabularEncoder.from_state_dict(prep["tabular"])
    inputs = model_inputs(comp, cfg.model, tokenizer, tab)
    y = comp.targets
    if cfg.competition.task == "regression":
        y = (y - np.array(prep["target_mean"])) / np.array(prep["target_std"])
    y = y.astype(np.int64 if cfg.competition.task == "multiclass" else np.float32)
    aug = cfg.train.augment
    active = aug if (aug.image or aug.text or aug.tabular) else None
    train_ds: Dataset[Any] = CompetitionDataset(comp.train.iloc[train_rows], inputs,
                                                y[train_rows], active)
    if cfg.pseudo is not None:
        train_ds = with_pseudo_rows(cfg, comp, fold, inputs, y[train_rows], train_rows, prep,
                                    active)
    valid_ds = CompetitionDataset(comp.train.iloc[valid_rows], inputs, y[valid_rows])
    valid_loader = build_loader(valid_ds, cfg.predict.batch_size or 2 * cfg.train.batch_size,
                                False, cfg.train.num_workers)
    model = build_model(cfg.model, n_outputs(comp), tab)
    metric = get_metric(cfg.competition.metric)
    generator = torch.Generator()
    plans = build_stage_plans(cfg, model, train_ds, generator, metric.greater_is_better)
    y_valid = comp.targets[valid_rows]

    def score(outputs: np.ndarray) -> float:
        return metric(y_valid, to_predictions(cfg.competition.task, outputs, prep))

    callbacks = build_callbacks(cfg, metric.greater_is_better)
    cons = cfg.train.consistency
    if cons is not None:
        callbacks.append(build_consistency(
            cons, cfg.competition.task, CompetitionDataset(comp.test, inputs), active,
            [e.kind for e in cfg.model.encoders], n_outputs(comp),
            cfg.train.first_epoch(cons.start_epoch, cons.start_stage), run_seed * 100 + 7,
            cfg.train.num_workers))
    trainer = Trainer(model, accelerator, cfg.train.max_grad_norm, callbacks,
                      desc=f"{cfg.name} seed {seed} fold {fold + 1}/{cfg.folds.n_splits}")
    history = trainer.fit(plans, valid_loader, score, metric.greater_is_better, out,
                          generator, run_seed * 100)
    accelerator.free_memory()
    return {"best_epoch": history.best_epoch, "best_score": history.best_score,
            "epochs": history.epochs}


def to_predictions(task: str, outputs: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    """Probabilities (softmax/sigmoid) or de-standardised regression values."""
    if task == "multiclass":
        z = outputs - outputs.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if task in ("binary", "multilabel"):
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs * np.array(prep["target_std"]) + np.array(prep["target_mean"])


def fold_complete(cfg: ExperimentConfig, seed: int, fold: int) -> bool:
    """Whether the fold finished training under this config."""
    path = fold_dir(cfg, seed, fold) / "metrics.json"
    return path.is_file() and read_json(path).get("config_hash") == cfg.train_hash()


def run_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator | None, tokenizer: Any,
) -> float:
    """Train (or skip) one fold, make sure its predictions are current; returns its score."""
    out = fold_dir(cfg, seed, fold)
    metrics_path = out / "metrics.json"
    desc = f"{cfg.name} seed {seed} fold {fold + 1}/{cfg.folds.n_splits}"
    if fold_complete(cfg, seed, fold):
        log.info("%s: complete, skipped", desc)
    else:
        if cfg.model.is_sklearn:
            result = train_sklearn_fold(cfg, comp, folds, seed, fold, out)
        else:
            assert accelerator is not None
            result = train_network_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
            predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
        write_json(metrics_path, {"config_hash": cfg.train_hash(), **result})
    if not cfg.model.is_sklearn:
        pred_path = out / "predictions.json"
        if not pred_path.is_file() or read_json(pred_path)["hash"] != prediction_hash(cfg):
            assert accelerator is not None
            predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
    valid = folds == fold
    oof = pd.read_parquet(out / "oof.parquet")
    score = get_metric(cfg.competition.metric)(
        comp.targets[valid], oof[comp.pred_columns].to_numpy(dtype=np.float64))
    log.info("%s: %s %.5f", desc, cfg.competition.metric, score)
    return score


def gather(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray) -> float:
    """Merge fold predictions into ``oof.parquet``, ``test.parquet``, ``test_folds.parquet``."""
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    metric = get_metric(cfg.competition.metric)
    y = comp.targets
    n_train = len(comp.train)
    meta = read_meta(cfg.run_dir)
    oof_sum = np.zeros((n_train, len(cols)))
    test_parts, scores = [], {}
    for seed in cfg.train.seeds:
        oof = np.full((n_train, len(cols)), np.nan)
        for fold in range(cfg.folds.n_splits):
            out = fold_dir(cfg, seed, fold)
            rows = np.flatnonzero(folds == fold)
            part = pd.read_parquet(out / "oof.parquet")
            expected = comp.train[id_col].iloc[rows].astype(str).tolist()
            if part[id_col].astype(str).tolist() != expected:
                raise DataError(f"{out / 'oof.parquet'} holds other ids than fold {fold}")
            oof[rows] = part[cols].to_numpy(dtype=np.float64)
            test = pd.read_parquet(out / "test.parquet")
            test.insert(0, "fold", fold)
            test.insert(0, "seed", seed)
            test_parts.append(test)
            scores[f"seed{seed}/fold{fold}"] = metric(y[rows], oof[rows])
        if np.isnan(oof).any():
            raise DataError(f"OOF predictions of seed {seed} miss rows: folds incomplete")
        scores[f"seed{seed}"] = metric(y, oof)
        oof_sum += oof
        _write_member(cfg, comp, folds, seed, oof, test_parts[-cfg.folds.n_splits:], meta)
    oof_mean = oof_sum / len(cfg.train.seeds)
    overall = metric(y, oof_mean)
    scores["oof"] = overall
    oof_frame = _predictions_frame(comp.train[id_col].to_numpy(), oof_mean, cols, id_col, folds)
    test_folds = pd.concat(test_parts, ignore_index=True)
    test_mean = test_folds.groupby(id_col, sort=False)[cols].mean()
    test_frame = test_mean.loc[comp.test[id_col]].reset_index()
    run_dir = cfg.run_dir
    write_parquet(run_dir / "oof.parquet", oof_frame)
    write_parquet(run_dir / "test_folds.parquet", test_folds)
    write_parquet(run_dir / "test.parquet", test_frame)
    write_json(run_dir / "scores.json", {"metric": metric.name, "direction": metric.direction,
                                         "scores": scores})
    log.info("%s: OOF %s %.5f (%d seed(s) x %d folds) -> %s", cfg.name, metric.name, overall,
             len(cfg.train.seeds), cfg.folds.n_splits, run_dir)
    return overall


def _predictions_frame(ids: np.ndarray, values: np.ndarray, cols: list[str], id_col: str,
                       folds: np.ndarray | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=cols)
    if folds is not None:
        frame.insert(0, "fold", folds)
    frame.insert(0, id_col, ids)
    return frame


def _write_member(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
                  oof: np.ndarray, test_parts: list[pd.DataFrame], meta: RunMeta) -> None:
    """``seed<s>/`` as a run of its own (run.json, oof, test): one ensemble member per seed."""
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    folder = cfg.run_dir / f"seed{seed}"
    test = pd.concat(test_parts).groupby(id_col, sort=False)[cols].mean()
    write_parquet(folder / "oof.parquet", _predictions_frame(
        comp.train[id_col].to_numpy(), oof, cols, id_col, folds))
    write_parquet(folder / "test.parquet", test.loc[comp.test[id_col]].reset_index())
    write_meta(folder, dataclasses.replace(meta, name=f"{cfg.name}-seed{seed}"))


def load_folds(cfg: ExperimentConfig, comp: Competition) -> np.ndarray:
    """The competition's folds, made first if the folds stage has not run."""
    path = folds_stage.run(cfg, comp)
    return folds_stage.read_folds(path, comp, cfg.folds.n_splits)


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> float:
    """Train every (seed, fold) not yet complete and gather the run; returns the OOF score."""
    comp = comp or load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    prepare_run_dir(cfg, comp)
    if cfg.pseudo is not None:
        pseudo_stage.run(cfg, comp)
    accelerator = None if cfg.model.is_sklearn else build_accelerator(cfg)
    tokenizer = None if cfg.model.is_sklearn else build_tokenizer(cfg.model)
    if accelerator is not None:
        log.info("%s: training on %s (mixed precision: %s)", cfg.name, accelerator.device,
                 accelerator.mixed_precision)
    for seed in cfg.train.seeds:
        for fold in range(cfg.folds.n_splits):
            run_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
    return gather(cfg, comp, folds)


def read_scores(run_dir: Path) -> dict[str, Any]:
    """The run's ``scores.json``."""
    return json.loads((run_dir / "scores.json").read_text())
