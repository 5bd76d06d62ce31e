"""Fit a LightGBM, XGBoost or CatBoost member on the rows outside one fold, early-stopped on
the fold's rows, and predict those rows and the test set with the trees it kept. The
category encodings and the regression target transform are fitted on the training rows
only; predictions are inverted back to the targets' units."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import joblib
import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_path, write_csv, write_parquet
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.data.encodings import CategoryEncodings
from pipeline.data.target_transform import TargetTransform
from pipeline.data.text_features import TfidfColumns
from pipeline.data.time_folds import training_rows
from pipeline.job_seed import job_seed
from pipeline.jobs.inputs import predicted_frames, pseudo_rows
from pipeline.metrics import get_metric
from pipeline.models.gbdt import (
    LIBRARY,
    TREE_KEYS,
    GBDTModel,
    GBDTSettings,
    TreeFeatures,
    build_estimator,
    fit_estimator,
    gbdt_settings,
    resolve_device,
)
from pipeline.models.tree_features import high_cardinality_encoder
from pipeline.runs import FULL_FIT, fold_dir, fold_label, pseudo_path

log = logging.getLogger(__name__)
IMPORTANCE_FILE = "feature_importance.csv"  # beside the predictions; not checksummed
# The first tree scoring best on the validation rows: every later one made the eval metric
# worse for `early_stopping_rounds` trees, so the fold predicts from one tree at the learning
# rate, near a constant. LightGBM did so on rare positives (0.4%) under log loss in 3 of 5
# folds (held-out log loss 0.0208, ROC AUC 0.64): its splits on a 5,000-level category
# overfit at once; with cat_smooth 50 and min_data_per_group 200 it kept 9-22 trees in 4
# folds, 0.0193 and 0.85 (docs/benchmarks.md, "Rare positives").
ONE_TREE = ("its first tree scored best on the fold's rows, every later one worse, so it "
            "predicts near a constant; the trees overfit from the start: for LightGBM on "
            "high-cardinality categories try params cat_smooth: 50, min_data_per_group: 200, "
            "or a lower 'model.tabular.high_cardinality' (columns of more levels are target + "
            "count encoded, not coded)")
# regression metrics that read the targets' scale (logs of them, ratios to them)
_SCALE_METRICS = frozenset({"rmsle", "mape", "smape"})


def _output_labels(task: str, labels: np.ndarray, j: int) -> np.ndarray:
    """Output ``j``'s column(s) of a labels matrix in the prediction layout."""
    return labels if task == "multiclass" else labels[:, j]


def _pseudo_rows(task: str, labels: np.ndarray, weight: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pseudo-labelled rows as (row index, label, weight) for one output.

    Trees fit hard labels, so a row whose label is a probability becomes one row per class
    weighted by that class's probability (times the row's weight): the weighted log loss of
    the copies is the soft-label cross-entropy, and a hard (one-hot, 0/1) label stays one row.
    """
    if task == "regression":
        return np.arange(len(labels)), labels.astype(np.float64), weight
    probs = labels if labels.ndim == 2 else np.stack([1 - labels, labels], axis=1)
    rows, classes = np.nonzero(probs > 0)
    return rows, classes, weight[rows] * probs[rows, classes]


def _stopping_metric(cfg: ExperimentConfig, y_valid: np.ndarray, target: str, n_classes: int,
                     label: str) -> str:
    """The metric output ``j``'s trees are early-stopped on: the competition's, or log loss
    where validation rows of one class leave it unable to rank predictions (ROC AUC and
    average precision have no value, F1, MCC or QWK one value for all). Its first tree
    would score as well as any later one and end the fit there (1 of 200 trees kept)."""
    metric, task = get_metric(cfg.competition.metric), cfg.competition.task
    if task == "regression":
        # a target transform puts the trees (and their eval metric) in its space, where a
        # metric of the targets' scale is meaningless: standardised values below -1 make
        # RMSLE NaN (XGBoost kept 1 tree of 200; CatBoost failed on a NaN), values near 0
        # blow MAPE up. RMSE there is the trees' own loss, and under log1p it is the RMSLE.
        if cfg.model.target_transform != "none" and metric.name in _SCALE_METRICS:
            return "rmse"
        return metric.name
    if task == "multiclass":  # indices among the n_classes the fold trains on
        informative = metric.ranks_on(task, y_valid, n_classes)
    else:  # one label's 0/1 column, scored as a binary target
        informative = metric.ranks_on("binary", y_valid.reshape(-1, 1), 1)
    if informative:
        return metric.name
    log.warning("%s: %s is undefined on this fold's validation rows of %r (a single class); "
                "its trees are early-stopped on log loss", label, metric.name, target)
    return "log_loss"


def _read_pseudo(cfg: ExperimentConfig, comp: Competition, fold: int
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The fold's pseudo-labelled rows, their labels (prediction layout) and weights."""
    pseudo = pd.read_parquet(pseudo_path(cfg, fold))
    rows = pseudo_rows(comp, pseudo)
    labels = pseudo[comp.pred_columns].to_numpy(dtype=np.float64)
    return rows, labels, pseudo["weight"].to_numpy(dtype=np.float64)


def group_of(task: str, classes: np.ndarray) -> str:
    """The estimator's task group: two classes left of a multiclass task (a class rarer than
    the folds absent from a fold's training rows) are fitted with a binary objective, which
    a multiclass eval metric refuses ("Multiclass objective and metrics don't match")."""
    return "binary" if task == "multiclass" and len(classes) == 2 else task


def fixed_length(settings: GBDTSettings, trees: int) -> GBDTSettings:
    """``settings`` fitting exactly ``trees`` trees, without early stopping (a full model)."""
    key = next(k for k in settings.params if k in TREE_KEYS)  # gbdt_settings set one
    return dataclasses.replace(settings, params={**settings.params, key: trees},
                               early_stopping_rounds=0)


def _n_outputs(task: str, comp: Competition) -> int:
    """Estimators per fold: one per label (multilabel) or target (regression), else one."""
    return len(comp.pred_columns) if task in ("multilabel", "regression") else 1


def train_gbdt_fold(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
                    fold: int, trees: list[int] | None = None) -> dict[str, Any]:
    """Fit on the rows outside ``fold`` (plus its pseudo-labelled rows), early-stopped on the
    fold's rows; write ``model.joblib``, the OOF/test predictions and the feature importance.

    Seeded with :func:`pipeline.job_seed.job_seed` like every job. Returns what
    ``metrics.json`` records: the trees kept per estimator (``best_iteration``, 1-based),
    the eval metric and device.

    ``fold`` :data:`pipeline.runs.FULL_FIT`: the seed's full model, fitted on every row with
    ``trees[j]`` trees for output ``j`` and no early stopping; it predicts the test rows.
    """
    full = fold == FULL_FIT
    out = fold_dir(cfg, seed, fold)
    encoder = cfg.model.encoders[0]
    settings = gbdt_settings(encoder.kind, encoder.params)
    device = resolve_device(settings)
    task, lib = cfg.competition.task, settings.library
    train_rows = training_rows(comp, folds, fold, cfg.folds.gap)  # purged under 'gap'
    valid_rows = np.flatnonzero(folds == fold)
    targets = comp.targets.reshape(len(comp.train), -1)  # multiclass: one column of indices
    target = None
    if task == "regression" and cfg.model.target_transform != "none":
        target = TargetTransform(cfg.model.target_transform, tuple(comp.cfg.target_columns))
        target.check(targets)  # the whole column, so every fold agrees
        targets = target.fit(targets[train_rows]).transform(targets)
    tab = cfg.model.tabular
    above, high = high_cardinality_encoder(lib, tab.high_cardinality, tuple(tab.encodings),
                                           task, tab.target_cv, tab.target_smooth,
                                           job_seed(seed, fold))
    features = TreeFeatures(comp.numeric_columns, comp.categorical_columns, encodings=(
        CategoryEncodings(tuple(tab.encodings), task, tab.target_cv, tab.target_smooth,
                          job_seed(seed, fold)) if tab.encodings else None),
        texts=tuple(comp.cfg.text_columns),
        text=TfidfColumns.from_config(tab.text, dense=True, seed=job_seed(seed, fold)),
        high_above=above, high=high)
    y_enc = targets[train_rows, 0] if task == "multiclass" else targets[train_rows]
    x_train = features.fit_transform(comp.train.iloc[train_rows], y_enc, lib)
    # a full model validates on no rows
    x_valid = None if full else features.transform(comp.train.iloc[valid_rows], lib)
    pseudo = _read_pseudo(cfg, comp, fold) if cfg.pseudo is not None else None
    x_pseudo = features.transform(pseudo[0], lib) if pseudo is not None else None
    if pseudo is not None and target is not None:  # pseudo-labels are in the targets' units
        pseudo = (pseudo[0], target.transform(target.in_domain(pseudo[1])), pseudo[2])
    model = GBDTModel(lib, task, len(comp.classes), features, target=target,
                      rows=len(train_rows))
    metric_names, one_tree = [], []
    for j in range(_n_outputs(task, comp)):
        y_train = targets[train_rows, 0 if task == "multiclass" else j]
        y_valid = targets[valid_rows, 0 if task == "multiclass" else j]
        x_fit, y_fit, w_fit = x_train, y_train, np.ones(len(train_rows))
        held = ~np.isnan(y_train)  # this target's rows ('competition.missing_targets: mask')
        if not held.all():
            x_fit, y_fit, w_fit = x_train.iloc[held], y_train[held], w_fit[held]
        if pseudo is not None and x_pseudo is not None:
            rows, y_extra, w_extra = _pseudo_rows(task, _output_labels(task, pseudo[1], j),
                                                  pseudo[2])
            # beside the rows that have this target (x_fit): the rows lacking it carry NaN
            x_fit = pd.concat([x_fit, x_pseudo.iloc[rows]], ignore_index=True)
            y_fit = np.concatenate([y_fit, y_extra])
            w_fit = np.concatenate([w_fit, w_extra])
        keep = ~np.isnan(y_valid)  # early-stopped on the fold's rows that have the target
        classes = np.zeros(0, dtype=np.int64)
        if task != "regression":  # labels 0..k-1 over the classes this fold trains on
            classes = np.unique(y_fit.astype(np.int64))
            valid_labels = np.nan_to_num(y_valid, nan=-1).astype(np.int64)
            keep &= np.isin(valid_labels, classes)
            y_fit = np.searchsorted(classes, y_fit.astype(np.int64))
            y_valid = np.searchsorted(classes, valid_labels)
        est, kept = None, 0
        if full and (task == "regression" or len(classes) > 1):
            assert trees is not None
            fixed = fixed_length(settings, max(1, trees[j]))
            # its eval metric is only watched: the fit has no early stopping
            est = build_estimator(fixed, group_of(task, classes),
                                  "rmse" if task == "regression" else "log_loss", device,
                                  job_seed(seed, fold), features.categorical_names())
            # the rows passed for validation only satisfy the signature
            kept = fit_estimator(est, fixed, x_fit, y_fit, w_fit, x_fit.iloc[:64], y_fit[:64])
        elif x_valid is not None and (task == "regression" or len(classes) > 1):
            # one class (a rare label's fold without positives) is a constant: LightGBM and
            # XGBoost fit it as two classes, CatBoost refuses it (GBDTModel.predict)
            target_name = (comp.pred_columns[j] if task == "multilabel"
                           else comp.cfg.target_columns[0])
            stopping = _stopping_metric(cfg, y_valid[keep], target_name, len(classes),
                                        fold_label(cfg, seed, fold))
            # two classes left (a class rarer than the folds absent from this fold's
            # training rows): the libraries fit them with a binary objective, which a
            # multiclass eval metric refuses ("Multiclass objective and metrics don't match")
            est = build_estimator(settings, group_of(task, classes), stopping, device,
                                  job_seed(seed, fold), features.categorical_names())
            kept = fit_estimator(est, settings, x_fit, y_fit, w_fit, x_valid[keep],
                                 y_valid[keep])
            if kept == 1 and settings.early_stopping_rounds:
                one_tree.append(target_name)
        model.estimators.append(est)
        model.trees.append(kept)
        model.classes.append(classes)
        metric_names.append(str(est.get_params().get(LIBRARY[lib].metric_key) or "default")
                            if est is not None else "none (one class)")
    with atomic_path(out / "model.joblib") as tmp:
        joblib.dump(model, tmp)
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    predictions = {}
    for name, frame in predicted_frames(comp, None if full else valid_rows).items():
        predictions[name] = model.predict(frame)
        result = pd.DataFrame(predictions[name], columns=cols)
        result.insert(0, id_col, frame[id_col].to_numpy())
        write_parquet(out / f"{name}.parquet", result)
    write_csv(out / IMPORTANCE_FILE, model.importance_frame())
    cap = next((v for k, v in settings.params.items() if k in TREE_KEYS), None)
    log.info("%s: %s kept %s of %s trees (%s, %s)", fold_label(cfg, seed, fold), lib,
             "/".join(map(str, model.trees)), "the folds'" if full else cap,
             "no early stopping" if full else f"early stopping on {metric_names[0]}", device)
    metric = get_metric(cfg.competition.metric, comp.scored_values)
    score = None if full else metric(comp.targets[valid_rows], predictions["oof"])
    # a first tree that already ranks the fold's rows perfectly is no overfit (a tiny table)
    if one_tree and not (metric.order_only and score == 1.0):
        log.warning("%s: %s kept 1 tree of %s: %s", fold_label(cfg, seed, fold), lib,
                    ", ".join(map(repr, one_tree)), ONE_TREE)
    return {"model": encoder.name,
            "best_iteration": model.trees[0] if len(model.trees) == 1 else model.trees,
            "n_estimators": cap, "eval_metric": metric_names[0], "device": device,
            "early_stopping_rounds": settings.early_stopping_rounds, "best_score": score}
