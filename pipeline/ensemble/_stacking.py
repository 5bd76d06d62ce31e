"""Stacking: a scikit-learn model trained on the members' OOF predictions, fold by fold."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from pipeline.ensemble._base import BLENDERS, Blender, renormalise
from pipeline.metrics import Metric, get_metric

_EPS = 1e-6


@BLENDERS.register("stacking")
class StackingBlender(Blender):
    """A second-level model on the members' predictions, trained with the members' folds.

    For each fold, a clone of ``model`` is trained on the other folds' rows and predicts
    this fold's rows, so no OOF row is predicted by a model that saw it. The test prediction
    is the average of the fold models (as competitors do), not a refit on every row.
    Classification fits one model per label (binary, multilabel) or one multiclass model.

    Args:
        model: A scikit-learn estimator; default ``LogisticRegression`` for classification
            (``predict_proba`` is used) and ``Ridge`` for regression.
        logit: Feed log-odds (log-probabilities for multiclass) rather than probabilities.
        metric: The competition metric (a name or a :class:`~pipeline.metrics.Metric`);
            under ``rmsle`` a regression stacker fits and predicts ``log1p`` values (the
            metric's space; a least-squares fit on raw values weighs the largest targets
            most), its predictions turned back with ``expm1``.
    """

    needs_folds = True
    oof_held_out = True  # each fold's rows predicted by the model fitted without them

    def __init__(self, model: BaseEstimator | None = None, logit: bool = True,
                 metric: str | Metric | None = None) -> None:
        self.model = model
        self.logit = logit
        self.metric = metric

    def check_params(self) -> None:
        if self.model is not None and not hasattr(self.model, "fit"):
            raise ValueError("The 'model' parameter of StackingBlender must be a scikit-learn "
                             f"estimator (or None for the default). Got {self.model!r}.")
        if not isinstance(self.logit, bool):
            raise ValueError(f"The 'logit' parameter of StackingBlender must be true or false. "
                             f"Got {self.logit!r}.")

    def _log_space(self) -> bool:
        name = (self.metric if isinstance(self.metric, Metric)
                else get_metric(self.metric)).name if self.metric is not None else None
        return self.task_ == "regression" and name == "rmsle"

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        assert folds is not None  # guaranteed by Blender.fit since needs_folds
        x = self._features(stacked)
        if self._log_space():
            y = np.log1p(y)
        oof = np.zeros(stacked.shape[1:])
        self.fold_values_ = np.unique(folds)
        self.fold_models_: list[list[Any]] = []
        # Second-level models are tiny: threaded BLAS only adds overhead (tens of times
        # slower for a multinomial LogisticRegression on 2 cores).
        with threadpool_limits(limits=1, user_api="blas"):
            for fold in self.fold_values_:
                train, held = folds != fold, folds == fold
                models = self._fit_one(x[train], y[train])
                oof[held] = self._predict_one(models, x[held])
                self.fold_models_.append(models)
        return np.expm1(oof) if self._log_space() else oof

    def _predict(self, stacked: np.ndarray) -> np.ndarray:
        x = self._features(stacked)
        with threadpool_limits(limits=1, user_api="blas"):
            preds = [self._predict_one(models, x) for models in self.fold_models_]
        mean = np.mean(preds, axis=0)
        return np.expm1(mean) if self._log_space() else mean

    def _features(self, stacked: np.ndarray) -> np.ndarray:
        if self._log_space():  # rmsle clips negative predictions to 0 too
            stacked = np.log1p(np.clip(stacked, 0, None))
        elif self.logit and self.task_ == "multiclass":
            stacked = np.log(np.clip(stacked, _EPS, 1.0))
        elif self.logit and self.task_ != "regression":
            p = np.clip(stacked, _EPS, 1 - _EPS)
            stacked = np.log(p / (1 - p))
        return stacked.transpose(1, 0, 2).reshape(stacked.shape[1], -1)

    def _base_model(self) -> BaseEstimator:
        if self.model is not None:
            return clone(self.model)
        if self.task_ == "regression":
            return Ridge(alpha=1.0)
        return LogisticRegression(C=1.0, max_iter=1000)

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> list[Any]:
        if self.task_ in ("regression", "multiclass"):
            return [self._base_model().fit(x, y)]
        return [self._fit_label(x, y[:, j]) for j in range(y.shape[1])]

    def _fit_label(self, x: np.ndarray, y: np.ndarray) -> Any:
        if len(np.unique(y)) < 2:  # a fold without positives: predict the constant seen
            return float(y[0])
        return self._base_model().fit(x, y)

    def _predict_one(self, models: list[Any], x: np.ndarray) -> np.ndarray:
        if self.task_ == "regression":
            return np.asarray(models[0].predict(x)).reshape(len(x), -1)
        if self.task_ == "multiclass":
            proba = np.zeros((len(x), self.n_columns_))
            proba[:, models[0].classes_.astype(int)] = models[0].predict_proba(x)
            return renormalise(proba)
        cols = []
        for model in models:
            if isinstance(model, float):
                cols.append(np.full(len(x), model))
            else:
                cols.append(model.predict_proba(x)[:, list(model.classes_).index(1)])
        return np.stack(cols, axis=1)
