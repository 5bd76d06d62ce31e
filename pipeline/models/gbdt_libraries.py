"""The gradient-boosting libraries a GBDT member names (:mod:`pipeline.models.gbdt`): their
estimator classes, seed and eval-metric params, and their names for our metrics."""

from __future__ import annotations

from dataclasses import dataclass

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


_RMSE = {"regression": "rmse"}
LIBRARY = {
    "lightgbm": Library("lightgbm", "LGBMClassifier", "LGBMRegressor", {
        "roc_auc": {"binary": "auc"}, "gini": {"binary": "auc"},
        "average_precision": {"binary": "average_precision"},
        "log_loss": {"binary": "binary_logloss", "multiclass": "multi_logloss"},
        "accuracy": {"binary": "binary_error", "multiclass": "multi_error"},
        "rmse": _RMSE, "mse": _RMSE, "mcrmse": _RMSE, "r2": _RMSE,
        "mae": {"regression": "l1"}, "mape": {"regression": "mape"},
    }, "metric", "random_state"),
    "xgboost": Library("xgboost", "XGBClassifier", "XGBRegressor", {
        "roc_auc": {"binary": "auc"}, "gini": {"binary": "auc"},
        "average_precision": {"binary": "aucpr"},
        "log_loss": {"binary": "logloss", "multiclass": "mlogloss"},
        "accuracy": {"binary": "error", "multiclass": "merror"},
        "rmse": _RMSE, "mse": _RMSE, "mcrmse": _RMSE, "r2": _RMSE,
        "mae": {"regression": "mae"}, "rmsle": {"regression": "rmsle"},
        "mape": {"regression": "mape"},
    }, "eval_metric", "random_state"),
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
    }, "eval_metric", "random_seed"),
}


def task_group(task: str) -> str:
    """The kind of estimator one output needs: multilabel labels are binary models."""
    return "binary" if task == "multilabel" else task
