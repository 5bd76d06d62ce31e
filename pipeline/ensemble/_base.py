"""The blender contract, the ``BLENDERS`` registry and the helpers blenders share."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.integrate import trapezoid
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from pipeline.metrics import Metric, get_metric
from pipeline.registry import Registry

BLENDERS: Registry[type[Blender]] = Registry("blender")


def stack_members(preds: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Member predictions as one ``(m, n, c)`` float array; 1-D members become one column."""
    mats = [np.asarray(p, dtype=np.float64) for p in preds]
    if not mats:
        raise ValueError("blending needs at least one member prediction matrix. Got none.")
    mats = [p[:, None] if p.ndim == 1 else p for p in mats]
    shapes = {p.shape for p in mats}
    if len(shapes) != 1 or mats[0].ndim != 2:
        raise ValueError(f"member predictions must all be (n, c) matrices. Got shapes {shapes}.")
    stacked = np.stack(mats)
    if not np.isfinite(stacked).all():
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(stacked))[0]})
        raise ValueError(f"member predictions hold NaN or inf values (members {bad})")
    return stacked


def renormalise(p: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to one (multiclass probabilities after a non-convex operation)."""
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)


def infer_task(y: np.ndarray) -> str:
    """Task implied by encoded targets: multiclass, binary, multilabel or regression."""
    if y.ndim == 1:
        return "multiclass"
    if np.isin(y, (0.0, 1.0)).all():
        return "binary" if y.shape[1] == 1 else "multilabel"
    return "regression"


def member_scores(metric: Metric, stacked: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each member's own score, shape ``(m,)``."""
    return np.array([metric(y, p) for p in stacked])


def _roc_auc_column(positive: np.ndarray, score: np.ndarray) -> float:
    """scikit-learn's ``roc_curve`` + ``auc`` arithmetic for one column, without its checks.

    Only the counts of positives and of rows at or above each distinct score enter the
    curve. They are integers, whatever order a sort gives tied scores, so an unstable sort
    and integer arithmetic reach the very arrays scikit-learn's stable sort and float
    cumulative sums do, and the same area.
    """
    order = np.argsort(score)[::-1]  # descending
    ranked = score[order]
    tied = ranked[1:] == ranked[:-1]
    tps = np.cumsum(positive[order])  # positives at or above each row
    if tied.any():  # the last row of each run of equal scores
        ends = np.append(np.flatnonzero(~tied), score.size - 1)
        tps = tps[ends]
    else:
        ends = np.arange(score.size)
    if ends.size > 2:  # drop_intermediate: keep the corners of the curve, as scikit-learn does
        dt, de = np.diff(tps), np.diff(ends)
        corner = (dt[1:] != dt[:-1]) | (de[1:] != de[:-1])
        keep = np.flatnonzero(np.concatenate(([True], corner, [True])))
        ends, tps = ends[keep], tps[keep]
    tpr = np.concatenate(([0.0], tps.astype(np.float64)))
    fpr = np.concatenate(([0.0], 1 + ends.astype(np.float64) - tpr[1:]))
    return float(trapezoid(tpr / tpr[-1], fpr / fpr[-1]))


def _fast_roc_auc(y: np.ndarray) -> Callable[[np.ndarray], float] | None:
    """ROC AUC of fixed targets ``y`` without scikit-learn's input checks (a blend objective
    calls it hundreds of times on the same rows); None where it could differ (a column
    with one class, which scikit-learn scores as NaN)."""
    if y.ndim == 1:  # multiclass, one-vs-rest macro over every class of the layout
        multiclass = True
        positive = y[:, None] == np.arange(int(y.max()) + 1)[None, :]
    else:
        multiclass = False
        if not np.isin(y, (0.0, 1.0)).all():
            return None
        positive = y == 1.0
    if not (positive.any(axis=0) & ~positive.all(axis=0)).all():
        return None
    positive = np.ascontiguousarray(positive.T, dtype=np.int64)  # a column's 0/1 per row

    def score(p: np.ndarray) -> float:
        if p.shape[1] != positive.shape[0] or (multiclass and not np.allclose(1, p.sum(axis=1))):
            return float("nan")  # the caller falls back to the registered metric
        if p.shape[1] == 1:
            return _roc_auc_column(positive[0], p[:, 0])
        columns = np.zeros(p.shape[1])
        for c in range(p.shape[1]):
            columns[c] = _roc_auc_column(positive[c], p[:, c])
        return float(np.average(columns))

    return score


def blend_scorer(
    metric: Metric, y: np.ndarray, probes: Sequence[np.ndarray]
) -> Callable[[np.ndarray], float]:
    """``p -> metric(y, p)`` for the many blends of one objective.

    ROC AUC through scikit-learn spends most of its time checking its inputs (1.4 of 1.5 ms
    at 450 rows) and sorts with a stable merge sort (30 ms at 100,000 rows); the same
    arithmetic on targets prepared once takes 0.05 and 9 ms. It is used only if it gives
    exactly (``==``) the registered metric's number on each of ``probes``; every other
    metric, and any blend the fast path declines, gets the registered metric itself, so the
    objective never differs from the reported score.
    """
    fast = _fast_roc_auc(y) if metric.name == "roc_auc" else None
    if fast is None or any(fast(p) != metric(y, p) for p in probes):
        return lambda p: metric(y, p)

    def score(p: np.ndarray) -> float:
        value = fast(p)
        return metric(y, p) if np.isnan(value) else value

    return score


class Blender(BaseEstimator, abc.ABC):
    """Combines member predictions ``(m, n, c)`` into one ``(n, c)`` prediction.

    Hyperparameters go to ``__init__``; :meth:`fit` learns from the members' OOF predictions,
    the encoded targets and (for blenders that need them) the fold of every row. After
    ``fit``, ``oof_`` holds the blended OOF prediction: the prediction on the fit rows for
    weight blenders, the out-of-fold prediction for stacking.
    """

    needs_folds = False  # stacking trains on folds; weight blenders ignore them
    # ``oof_`` saw no label of its own rows: fixed weights (mean, rank, power) or a model per
    # fold (stacking). A blender that tunes on the labels (optuna, hill_climb) leaves False:
    # its ``oof_`` is in-sample, and the blend stage publishes the nested CV's held-out blend
    oof_held_out = False
    # outputs an order, not probabilities or values (rank, power): only for metrics that read
    # the order (Metric.order_only); refused elsewhere rather than submitted as probabilities
    order_only = False

    def fit(
        self,
        preds: Sequence[np.ndarray] | np.ndarray,
        y: np.ndarray,
        folds: np.ndarray | None = None,
    ) -> Blender:
        """Learn the blend from member OOF predictions ``(m, n, c)`` and targets ``y``."""
        self.check_params()
        stacked = stack_members(preds)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] != stacked.shape[2]:
            raise ValueError(
                f"y has {y.shape[1]} columns but members predict {stacked.shape[2]} columns"
            )
        if len(y) != stacked.shape[1]:
            raise ValueError(f"y has {len(y)} rows but members predict {stacked.shape[1]} rows")
        if folds is not None:
            folds = np.asarray(folds)
            if folds.shape != (len(y),):
                raise ValueError(f"folds must have shape ({len(y)},). Got {folds.shape}.")
        if self.needs_folds and (folds is None or len(np.unique(folds)) < 2):
            raise ValueError(f"{type(self).__name__} needs folds with at least 2 distinct values")
        self.n_members_, _, self.n_columns_ = stacked.shape
        self.task_ = infer_task(y)
        self.oof_ = self._fit(stacked, y, folds)
        return self

    def predict(self, preds: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Blend member predictions ``(m, n', c)`` into ``(n', c)``."""
        check_is_fitted(self, "oof_")
        stacked = stack_members(preds)
        if stacked.shape[0] != self.n_members_ or stacked.shape[2] != self.n_columns_:
            raise ValueError(
                f"{type(self).__name__} was fit on {self.n_members_} members x "
                f"{self.n_columns_} columns. Got {stacked.shape[0]} x {stacked.shape[2]}."
            )
        return self._predict(stacked)

    def check_params(self) -> None:
        """Raise ValueError naming a hyperparameter whose value this blender cannot use;
        callable before ``fit`` (the blend stage refuses it before making its folder)."""

    @abc.abstractmethod
    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        """Learn the state; return the blended OOF prediction."""

    @abc.abstractmethod
    def _predict(self, stacked: np.ndarray) -> np.ndarray:
        """Blend an ``(m, n, c)`` stack."""


class WeightedBlender(Blender):
    """A blender whose prediction is a convex combination of the members.

    ``weights_`` is ``(m,)`` (one weight per member) or ``(m, c)`` (per class, each column
    on the simplex); multiclass rows are renormalised after per-class weighting.
    """

    weights_: np.ndarray

    def _predict(self, stacked: np.ndarray) -> np.ndarray:
        return blend_weighted(self.weights_, stacked, self.task_)

    @property
    def member_weights_(self) -> np.ndarray:
        """One weight per member (per-class weights averaged over classes)."""
        check_is_fitted(self, "weights_")
        w = self.weights_
        return w.mean(axis=1) if w.ndim == 2 else w


def blend_weighted(weights: np.ndarray, stacked: np.ndarray, task: str) -> np.ndarray:
    """``sum_i w_i P_i`` with ``(m,)`` or ``(m, c)`` weights, vectorised over the stack."""
    if weights.ndim == 1:
        return np.einsum("m,mnc->nc", weights, stacked)
    blended = np.einsum("mc,mnc->nc", weights, stacked)
    return renormalise(blended) if task == "multiclass" else blended


def simplex(x: np.ndarray) -> np.ndarray:
    """Non-negative raw weights scaled to sum to one (per column for 2-D); all-zero -> equal."""
    total = x.sum(axis=0, keepdims=True)
    equal = np.full_like(x, 1.0 / x.shape[0])
    return np.divide(x, total, out=equal, where=total > 0)


def resolve_metric(metric: str | Metric | None, owner: str) -> Metric:
    """The metric of a blender's ``metric`` parameter: a registered name, or a metric bound
    to the competition's classes (QWK weighs by their values: the blend stage passes it)."""
    if metric is None:
        raise ValueError(f"The 'metric' parameter of {owner} must name a metric. Got None.")
    return metric if isinstance(metric, Metric) else get_metric(metric)


def build_blender(name: str, **params: Any) -> Blender:
    """The blender registered as ``name``, built with ``params``.

    >>> build_blender("mean").fit([[[0.2]], [[0.4]]], [[0.0]]).predict([[[0.2]], [[0.4]]])
    array([[0.3]])
    """
    cls = BLENDERS.get(name)
    known = cls._get_param_names()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for blender {name!r}. "
            f"Known: {', '.join(known) or '(none)'}."
        )
    return cls(**params)
