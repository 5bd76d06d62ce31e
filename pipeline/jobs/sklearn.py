"""Fit a scikit-learn model on the rows outside one fold and predict the rest. Everything it
fits (column encodings, target encoding, target transform) sees the training rows only."""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_path, write_parquet
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.data.target_transform import TargetTransform
from pipeline.data.time_folds import training_rows
from pipeline.errors import DataError
from pipeline.jobs.inputs import predicted_frames
from pipeline.models.sklearn import build_estimator, predict_matrix
from pipeline.runs import FULL_FIT, fold_dir, fold_label


def _columns(comp: Competition) -> list[str]:
    """What the model reads: the feature columns, and the text columns (as TF-IDF)."""
    return [*comp.feature_columns, *comp.cfg.text_columns]


def _fit_frame(comp: Competition, rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    x = comp.train.iloc[rows][_columns(comp)]
    y = comp.targets[rows]
    if comp.cfg.task in ("binary",) or (comp.cfg.task == "regression" and y.shape[1] == 1):
        y = y.ravel()
    return x, y


def train_sklearn_fold(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
                       fold: int) -> dict[str, Any]:
    """Fit on the rows outside ``fold``; write the model and the OOF/test (and unlabelled)
    predictions."""
    out = fold_dir(cfg, seed, fold)
    encoder = cfg.model.encoders[0]
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    train_rows = training_rows(comp, folds, fold, cfg.folds.gap)  # purged under 'gap'
    valid_rows = np.flatnonzero(folds == fold)
    if cfg.competition.task == "regression":  # the whole column, so every fold agrees
        TargetTransform(cfg.model.target_transform, tuple(comp.cfg.target_columns)).check(
            comp.targets)
    model = build_estimator(encoder.target, encoder.params, comp, seed, cfg.model.tabular,
                            cfg.model.target_transform)
    x, y = _fit_frame(comp, train_rows)
    if cfg.competition.task in ("binary", "multiclass") and len(np.unique(y)) < 2:
        # scikit-learn's classifiers refuse it: 'needs samples of at least 2 classes', a
        # traceback (a class with a single row, a tiny train file)
        raise DataError(f"{fold_label(cfg, seed, fold)}: its training rows hold a single "
                        f"class ({comp.classes[int(y[0])]!r}), which a scikit-learn classifier "
                        "cannot fit; use fewer 'folds.n_splits', or more rows of each class")
    model.fit(x, y)
    with atomic_path(out / "model.joblib") as tmp:
        joblib.dump(model, tmp)
    for name, frame in predicted_frames(comp, None if fold == FULL_FIT else valid_rows).items():
        pred = predict_matrix(model, frame[_columns(comp)], comp, len(y))
        result = pd.DataFrame(pred, columns=cols)
        result.insert(0, id_col, frame[id_col].to_numpy())
        write_parquet(out / f"{name}.parquet", result)
    return {"model": encoder.target}
