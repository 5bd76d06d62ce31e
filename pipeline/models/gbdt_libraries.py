"""The gradient-boosting libraries a GBDT member names (:mod:`pipeline.models.gbdt`): their
estimator classes, seed and eval-metric params, and their names for our metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["LIBRARY", "Library", "task_group"]


@dataclass(frozen=True)
class Library:
    """One gradient-boosting library: its estimators and its names for our metrics.

    ``metrics`` maps a competition metric to the library's eval metric per task group
    (binary: binary and multilabel, one model per label; multiclass; regression). A metric
    it lacks leaves the library's default, its training loss.
    """

    module: str
    classifier: str
    regressor: str
    metrics: dict[str, dict[str, str]]
    metric_key: str  # the estimator param that names the eval metric
    seed_key: str
    # the estimator param of its CPU threads, and every alias a config may name it by
    thread_keys: tuple[str, ...] = ()


_RMSE = {"regression": "rmse"}
LIBRARY = {
    "lightgbm": Library("lightgbm", "LGBMClassifier", "LGBMRegressor", {
        "roc_auc": {"binary": "auc"}, "gini": {"binary": "auc"},
        "average_precision": {"binary": "average_precision"},
        "log_loss": {"binary": "binary_logloss", "multiclass": "multi_logloss"},
        "accuracy": {"binary": "binary_error", "multiclass": "multi_error"},
        "rmse": _RMSE, "mse": _RMSE, "mcrmse": _RMSE, "r2": _RMSE,
        "mae": {"regression": "l1"}, "mape": {"regression": "mape"},
    }, "metric", "random_state",
        ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads")),
    "xgboost": Library("xgboost", "XGBClassifier", "XGBRegressor", {
        "roc_auc": {"binary": "auc"}, "gini": {"binary": "auc"},
        "average_precision": {"binary": "aucpr"},
        "log_loss": {"binary": "logloss", "multiclass": "mlogloss"},
        "accuracy": {"binary": "error", "multiclass": "merror"},
        "rmse": _RMSE, "mse": _RMSE, "mcrmse": _RMSE, "r2": _RMSE,
        "mae": {"regression": "mae"}, "rmsle": {"regression": "rmsle"},
        "mape": {"regression": "mape"},
    }, "eval_metric", "random_state", ("n_jobs", "nthread")),
    "catboost": Library("catboost", "CatBoostClassifier", "CatBoostRegressor", {
        "roc_auc": {"binary": "AUC"}, "gini": {"binary": "AUC"},
        "average_precision": {"binary": "PRAUC"},
        "log_loss": {"binary": "Logloss", "multiclass": "MultiClass"},
        "accuracy": {"binary": "Accuracy", "multiclass": "Accuracy"},
        "mcc": {"binary": "MCC", "multiclass": "MCC"}, "f1": {"binary": "F1"},
        "qwk": {"multiclass": "WKappa"}, "mae": {"regression": "MAE"},
        "rmse": {"regression": "RMSE"}, "mse": {"regression": "RMSE"},
        "mcrmse": {"regression": "RMSE"}, "r2": {"regression": "R2"},
        "rmsle": {"regression": "MSLE"}, "mape": {"regression": "MAPE"},
        "smape": {"regression": "SMAPE"},
    }, "eval_metric", "random_seed", ("thread_count",)),
}


def task_group(task: str) -> str:
    """The kind of estimator one output needs: multilabel labels are binary models."""
    return "binary" if task == "multilabel" else task


# Set by a Ray worker to the CPUs its job asked for (pipeline.executor): a GBDT member whose
# params name no thread count runs on that many. Left unset (the local executor), each
# library keeps its own default, every core, as one job at a time should.
JOB_THREADS_ENV = "PIPELINE_JOB_THREADS"


def job_threads(library: str, params: dict[str, Any]) -> dict[str, int]:
    """The thread param to add to a ``library`` estimator's ``params`` ({} where none is due).

    Two Ray jobs on one machine each started every core's threads (LightGBM's ``n_jobs:
    None`` resolves to the physical cores whatever OMP_NUM_THREADS says; CatBoost's -1 is
    every core): threads wait on one another when the cores are shared, and a LightGBM fit
    that took 2.2 s on one thread took 17-77 s on two threads beside other work
    (docs/benchmarks.md, 2026-11-29)."""
    given = os.environ.get(JOB_THREADS_ENV)
    keys = LIBRARY[library].thread_keys
    if not given or not keys or any(k in params for k in keys):
        return {}
    return {keys[0]: max(1, int(given))}
