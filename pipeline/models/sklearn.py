"""A scikit-learn estimator named by import path, trained as a model of its own per fold."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from pipeline.competition import Competition
from pipeline.data.tabular import column_encoder
from pipeline.errors import ConfigError


def import_estimator(path: str) -> type[BaseEstimator]:
    """The estimator class at ``package.module.Class``."""
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"encoder 'sklearn:{path}': no class {path!r} can be imported") from None
    if not (inspect.isclass(cls) and hasattr(cls, "fit")):
        raise ConfigError(f"encoder 'sklearn:{path}': {path!r} is not an estimator class")
    return cls


def estimator_kind(path: str) -> str | None:
    """'classifier' or 'regressor' for the estimator class at ``path`` (scikit-learn's tags),
    None when it says neither (a transformer, a clusterer, a third-party class)."""
    cls = import_estimator(path)
    try:
        kind = get_tags(cls()).estimator_type
    except Exception:
        return None
    return kind if kind in ("classifier", "regressor") else None


def build_estimator(path: str, params: dict[str, Any], comp: Competition, seed: int) -> Pipeline:
    """The shared column encoding (ordinal categories, median fill where the estimator does
    not take NaN) + the estimator at import ``path`` with ``params``."""
    cls = import_estimator(path)
    params = dict(params)
    if "random_state" in inspect.signature(cls).parameters and "random_state" not in params:
        params["random_state"] = seed
    try:
        estimator = cls(**params)
    except TypeError as err:
        raise ConfigError(f"encoder 'sklearn:{path}': bad 'params': {err}") from None
    task, k = comp.cfg.task, len(comp.cfg.target_columns)
    if task == "multilabel":
        estimator = MultiOutputClassifier(estimator)
    elif task == "regression" and k > 1:
        estimator = MultiOutputRegressor(estimator)
    allow_nan = get_tags(clone(cls(**params))).input_tags.allow_nan
    # the encoding every model shares; trees need no scaling, and keep NaN where they can
    columns = column_encoder(comp.numeric_columns, comp.categorical_columns, scale=False,
                             impute=not allow_nan, indicators=False)
    return Pipeline([("columns", columns), ("model", estimator)])


def predict_matrix(model: Pipeline, frame: pd.DataFrame, comp: Competition) -> np.ndarray:
    """Predictions in the artifact layout: probabilities per class/label, values otherwise."""
    task = comp.cfg.task
    if task == "regression":
        return np.asarray(model.predict(frame), dtype=np.float64).reshape(len(frame), -1)
    proba = model.predict_proba(frame)
    if task == "multilabel":
        return np.stack([p[:, 1] for p in proba], axis=1)
    classes = model.classes_.astype(np.int64)
    full = np.zeros((len(frame), 2 if task == "binary" else len(comp.classes)))
    full[:, classes] = proba  # a class absent from the fold's training rows gets 0
    return full[:, 1:2] if task == "binary" else full
