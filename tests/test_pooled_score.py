"""A run's pooled OOF score under an order-only metric, set beside its folds' mean when the
fold models predict on different scales (pipeline/pooled_score.py, said by
pipeline/runs.py:gather). Fold predictions are written by hand: no model is trained."""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.artifacts import write_parquet
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.metrics import get_metric
from pipeline.pooled_score import pooled_gap_note
from pipeline.runs import fold_dir, gather, load_folds, prepare_run_dir


def _scaled_folds(y: np.ndarray, folds: np.ndarray, scales: list[float]) -> np.ndarray:
    """Predictions that rank each fold's rows alike (positives above most negatives), fold
    k's on ``scales[k]``: a fold model that kept fewer trees predicts lower."""
    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-(2.0 * y + rng.normal(size=len(y)))))
    return p * np.asarray(scales)[folds]


def test_folds_on_different_scales_are_said_with_both_scores() -> None:
    metric = get_metric("roc_auc")
    y = np.tile([0.0, 0.0, 0.0, 1.0], 200)
    folds = np.arange(len(y)) // 4 % 2  # each fold holds positives
    oof = _scaled_folds(y, folds, [1.0, 0.05])[:, None]
    per_fold = np.array([metric(y[folds == k, None], oof[folds == k]) for k in (0, 1)])
    pooled = metric(y[:, None], oof)
    assert per_fold.mean() - pooled > 0.1  # each fold ranks well; pooled, fold 1 sinks
    note = pooled_gap_note(metric, pooled, per_fold, oof, folds)
    assert note is not None
    assert f"OOF roc_auc {pooled:.5f} pooled" in note
    assert f"worse than the folds' mean {per_fold.mean():.5f}" in note
    low, high = oof[folds == 1].mean(), oof[folds == 0].mean()
    assert f"(mean prediction {low:.4g} to {high:.4g} by fold)" in note


def test_one_scale_or_a_metric_of_the_values_says_nothing() -> None:
    y = np.tile([0.0, 0.0, 0.0, 1.0], 200)
    folds = np.arange(len(y)) // 4 % 2  # each fold holds positives
    same = _scaled_folds(y, folds, [1.0, 1.0])[:, None]
    auc = get_metric("roc_auc")
    per_fold = np.array([auc(y[folds == k, None], same[folds == k]) for k in (0, 1)])
    assert pooled_gap_note(auc, auc(y[:, None], same), per_fold, same, folds) is None
    # log loss scores the values themselves: a fold's scale is its error, not a pooling one
    scaled = _scaled_folds(y, folds, [1.0, 0.05])[:, None]
    loss = get_metric("log_loss")
    per_fold = np.array([loss(y[folds == k, None], scaled[folds == k]) for k in (0, 1)])
    assert pooled_gap_note(loss, loss(y[:, None], scaled), per_fold, scaled, folds) is None


def test_gather_warns_when_the_pooled_score_understates_the_folds(
        competition_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    data = copy.deepcopy(competition_factory("tabular", "binary", n_train=200))
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    prepare_run_dir(cfg, comp)
    y = comp.targets[:, 0]
    oof = _scaled_folds(y, folds, [1.0, 0.05])
    id_col, col = cfg.competition.id_column, comp.pred_columns[0]
    for fold in (0, 1):
        rows = folds == fold
        for part, ids, values in (("oof", comp.train[id_col][rows], oof[rows]),
                                  ("test", comp.test[id_col], np.full(len(comp.test), 0.5))):
            write_parquet(fold_dir(cfg, 0, fold) / f"{part}.parquet",
                          pd.DataFrame({id_col: ids.to_numpy(), col: values}))
    with caplog.at_level(logging.WARNING, logger="pipeline.runs"):
        pooled = gather(cfg, comp, folds)
    auc = get_metric("roc_auc")
    mean = np.mean([auc(comp.targets[folds == k], oof[folds == k, None]) for k in (0, 1)])
    assert mean - pooled > 0.05
    said = [r.getMessage() for r in caplog.records if "pooled over the folds" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith(f"{cfg.name}: OOF roc_auc {pooled:.5f} pooled over the folds is "
                              f"{mean - pooled:.5f} worse than the folds' mean {mean:.5f}")
