"""Metric registry: name -> score function, direction and the tasks it applies to.

Every metric takes the encoded targets and the prediction matrix of the artifacts:

- ``y``: ``(n,)`` class indices for multiclass; ``(n, k)`` floats for binary (k=1),
  multilabel (k labels) and regression (k targets).
- ``p``: ``(n, c)`` probabilities (binary: of the positive class; multiclass: per class;
  multilabel: per label) or raw values for regression. Never thresholded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from pipeline.metric_base import METRICS, TASKS, Metric, MetricFn, is_number, register

__all__ = ["METRICS", "TASKS", "Metric", "MetricFn", "get_metric", "hard_labels", "is_number",
           "nearest_rating", "top_classes"]

def hard_labels(task: str, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices (multiclass) or 0/1 matrices (binary, multilabel) from probabilities."""
    if task == "multiclass":
        return p.argmax(axis=1)
    return (p >= threshold).astype(np.int64)


def _is_multiclass(y: np.ndarray) -> bool:
    return y.ndim == 1


def _labels(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if _is_multiclass(y):
        return y, p.argmax(axis=1)
    return y.astype(np.int64), (p >= 0.5).astype(np.int64)


CLASSIFICATION = ("binary", "multiclass", "multilabel")


@register("accuracy", True, CLASSIFICATION, needs_labels=True)
def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Share of rows with the right label (argmax or p >= 0.5); multilabel: all labels right."""
    t, h = _labels(y, p)
    if t.ndim == 1:
        return float((t == h).mean())
    return float((t == h).all(axis=1).mean())


@register("balanced_accuracy", True, ("binary", "multiclass"), needs_labels=True)
def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over classes."""
    t, h = _labels(y, p)
    return skm.balanced_accuracy_score(t.ravel(), h.ravel())


def _per_class_f1(t: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's F1 (0 where neither true nor predicted) and true count, counted here:
    scikit-learn's checks cost ~4 ms a call, and tuning thresholds scores it thousands of
    times (20 labels x 5,000 rows: ~30 min). Tests hold both to the same values."""
    if t.ndim == 1:
        classes = np.union1d(t, h)
        ti, hi = np.searchsorted(classes, t), np.searchsorted(classes, h)
        true = np.bincount(ti, minlength=len(classes))
        pred = np.bincount(hi, minlength=len(classes))
        hits = np.bincount(ti[ti == hi], minlength=len(classes))
    else:
        tb, hb = t.astype(bool), h.astype(bool)
        true, pred, hits = tb.sum(axis=0), hb.sum(axis=0), (tb & hb).sum(axis=0)
    size = (true + pred).astype(np.float64)
    return np.divide(2.0 * hits, size, out=np.zeros_like(size), where=size > 0), true


def _flat_if_one_column(t: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (t.ravel(), h.ravel()) if t.ndim == 2 and t.shape[1] == 1 else (t, h)  # binary


@register("f1", True, ("binary",), needs_labels=True)
def f1(y: np.ndarray, p: np.ndarray) -> float:
    """F1 of the positive class at threshold 0.5."""
    t, h = (a.ravel().astype(bool) for a in _labels(y, p))
    size = t.sum() + h.sum()
    return float(2.0 * (t & h).sum() / size) if size else 0.0


@register("f1_macro", True, CLASSIFICATION, needs_labels=True, masked="columns",
          masked_by="f1")
def f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    """Unweighted mean of per-class (or per-label) F1."""
    scores, _ = _per_class_f1(*_flat_if_one_column(*_labels(y, p)))
    return float(scores.mean())


@register("f1_micro", True, CLASSIFICATION, needs_labels=True, masked="cells",
          masked_by="f1")
def f1_micro(y: np.ndarray, p: np.ndarray) -> float:
    """F1 over all decisions pooled."""
    t, h = _flat_if_one_column(*_labels(y, p))
    if t.ndim == 1:  # every row one true and one predicted class: F1 pooled is accuracy
        return float((t == h).mean())
    size = t.sum() + h.sum()
    return float(2.0 * (t.astype(bool) & h.astype(bool)).sum() / size) if size else 0.0


@register("f1_weighted", True, ("multiclass", "multilabel"), needs_labels=True)
def f1_weighted(y: np.ndarray, p: np.ndarray) -> float:
    """Per-class F1 weighted by class support."""
    scores, true = _per_class_f1(*_labels(y, p))
    return float((scores * true).sum() / true.sum()) if true.sum() else 0.0


def _f_beta_rows(y: np.ndarray, p: np.ndarray, beta: float) -> float:
    # by hand: scikit-learn refuses one label's column (a GBDT member early-stops each label's
    # trees on it), where a row's F-beta over its one label is still defined
    t, h = (a.reshape(len(a), -1).astype(bool) for a in _labels(y, p))
    hits, beta2 = (t & h).sum(axis=1), beta**2
    sizes = beta2 * t.sum(axis=1) + h.sum(axis=1)
    # a row without labels predicted without labels is right (1), not undefined
    return float(np.where(sizes > 0, (1 + beta2) * hits / np.maximum(sizes, 1), 1.0).mean())


@register("f1_samples", True, ("multilabel",), needs_labels=True)
def f1_samples(y: np.ndarray, p: np.ndarray) -> float:
    """F1 of each row's labels, averaged over rows (Kaggle's 'mean F1')."""
    return _f_beta_rows(y, p, 1.0)


@register("f2_samples", True, ("multilabel",), needs_labels=True)
def f2_samples(y: np.ndarray, p: np.ndarray) -> float:
    """F2 of each row's labels, averaged over rows (Planet, iMet Collection)."""
    return _f_beta_rows(y, p, 2.0)


@register("precision", True, ("binary",), needs_labels=True)
def precision(y: np.ndarray, p: np.ndarray) -> float:
    """Precision of the positive class at threshold 0.5."""
    t, h = _labels(y, p)
    return skm.precision_score(t.ravel(), h.ravel(), zero_division=0)


@register("recall", True, ("binary",), needs_labels=True)
def recall(y: np.ndarray, p: np.ndarray) -> float:
    """Recall of the positive class at threshold 0.5."""
    t, h = _labels(y, p)
    return skm.recall_score(t.ravel(), h.ravel(), zero_division=0)


def top_classes(p: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` most probable classes, best first (ties: lower index)."""
    return np.argsort(-p, axis=1, kind="stable")[:, :k]


def map_at_k(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Mean average precision of the top-``k`` ranked classes (one true class per row)."""
    top = top_classes(p, k)
    hits = top == y[:, None]
    return float((hits / np.arange(1, k + 1)[None, : top.shape[1]]).sum(axis=1).mean())


# MAP@k as Kaggle competitions set it (MAP@3, @5, @7, @12, ...); the submission lists k labels
for _k in (1, 2, 3, 5, 7, 10, 12):
    METRICS.add(f"map@{_k}", Metric(f"map@{_k}", functools.partial(map_at_k, k=_k), True,
                                    ("multiclass",), top_k=_k, order_only=True),
                f"Mean average precision of the top-{_k} ranked classes (one true class per row).")


@register("mcc", True, ("binary", "multiclass"), needs_labels=True)
def mcc(y: np.ndarray, p: np.ndarray) -> float:
    """Matthews correlation coefficient."""
    t, h = _labels(y, p)
    return skm.matthews_corrcoef(t.ravel(), h.ravel())


@register("qwk", True, ("multiclass", "regression"), needs_labels=True, by_class_value=True)
def qwk(y: np.ndarray, p: np.ndarray, values: Sequence[float] | None = None) -> float:
    """Quadratic weighted kappa over ordered classes, weighted by the ratings' values."""
    # every class of the prediction layout counts, also one absent from this fold's labels and
    # predictions. A disagreement costs the squared distance of the two ratings' values, as
    # Kaggle's QWK (over the rating range min..max) has it: with ratings 1, 2, 4, 5, a 2 taken
    # for a 4 costs 4, not the 1 of neighbouring positions (scikit-learn weighs positions)
    if y.ndim == 2:  # a regression on the ratings: its values are rounded to the nearest one
        v = np.unique(y[:, 0]) if values is None else np.asarray(values, np.float64)
        truth, guess = nearest_rating(y[:, 0], v), nearest_rating(p[:, 0], v)
    else:
        v = (np.arange(p.shape[1], dtype=np.float64) if values is None
             else np.asarray(values, np.float64))
        truth, guess = np.asarray(y, np.int64), p.argmax(axis=1)
    c = len(v)
    # counted directly: scikit-learn's confusion_matrix costs ~1 ms of checks a call, and
    # tuning QWK's cut points scores it a thousand times
    observed = np.bincount(truth * c + guess, minlength=c * c).reshape(c, c).astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / max(len(y), 1)
    weights = (v[:, None] - v[None, :]) ** 2
    chance = float((weights * expected).sum())
    # every row and guess one class: kappa is undefined (scikit-learn's and Kaggle's 0 / 0)
    return 1.0 - float((weights * observed).sum()) / chance if chance > 0 else math.nan


def nearest_rating(p: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """The index of the rating (sorted ``ratings``) nearest to each value of ``p``: cut points
    halfway between neighbouring ratings, and the ends take what lies beyond them."""
    ratings = np.asarray(ratings, np.float64)
    return np.searchsorted((ratings[1:] + ratings[:-1]) / 2, np.asarray(p, np.float64),
                           side="right")


@register("roc_auc", True, CLASSIFICATION, order_only=True, masked="columns")
def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; one-vs-rest macro for multiclass, macro over labels for multilabel, over the
    classes (labels) that have both positive and negative rows."""
    if not _is_multiclass(y) and y.shape[1] == 1:
        # rows of one class (a fold of a rare positive class) have no AUC: NaN, without
        # scikit-learn's warning for every epoch of the fold
        return skm.roc_auc_score(y.ravel(), p.ravel()) if np.ptp(y) > 0 else math.nan
    # one-vs-rest is the AUC of each class's column (scikit-learn's "ovr"). A class absent
    # from a fold's rows (a class rarer than n_splits, which stratified folds allow) has no
    # AUC: averaging it in made the fold's score NaN, and every epoch's NaN score kept a
    # network's first epoch as its best
    y = np.eye(p.shape[1])[y] if _is_multiclass(y) else y
    defined = y.min(axis=0) < y.max(axis=0)
    if not defined.any():
        return math.nan
    return skm.roc_auc_score(y[:, defined], p[:, defined], average="macro")


@register("gini", True, ("binary",), order_only=True)
def gini(y: np.ndarray, p: np.ndarray) -> float:
    """Normalised Gini coefficient, 2 x ROC AUC - 1 (Porto Seguro, Home Credit)."""
    return 2.0 * roc_auc(y, p) - 1.0


@register("average_precision", True, ("binary", "multilabel"), order_only=True, masked="columns")
def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve (macro over the labels that have a positive)."""
    # a label without a positive row has no precision-recall curve: scikit-learn scores it 0
    # (with a warning), so a fold lacking a rare label lost 1/k of its score, and a binary
    # fold of negatives scored 0 every epoch, which kept its first epoch as the best. As ROC
    # AUC does, the mean leaves such labels out: NaN when no label has a positive
    defined = y.max(axis=0) > 0
    if not defined.any():
        return math.nan
    return skm.average_precision_score(y[:, defined], p[:, defined], average="macro")


def _log_losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's (multiclass) or cell's cross-entropy, probabilities clipped from 0 and 1."""
    eps = 1e-15
    if _is_multiclass(y):
        q = np.clip(p, eps, 1.0)
        q = q / q.sum(axis=1, keepdims=True)
        return -np.log(q[np.arange(len(y)), y])
    q = np.clip(p, eps, 1 - eps)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


@register("log_loss", False, CLASSIFICATION, masked="cells")
def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Cross-entropy of the probabilities (mean over labels for multilabel)."""
    return float(_log_losses(y, p).mean())


@register("balanced_log_loss", False, ("binary", "multiclass"))
def balanced_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Log loss with every class weighing the same: the mean over the classes present of
    their rows' mean log loss (ICR - Identifying Age-Related Conditions)."""
    losses = _log_losses(y, p).reshape(len(y), -1)[:, 0]
    labels = y if _is_multiclass(y) else y[:, 0].astype(np.int64)
    return float(np.mean([losses[labels == c].mean() for c in np.unique(labels)]))


@register("rmse", False, ("regression",), masked="cells")
def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error over all targets."""
    return float(np.sqrt(np.mean((y - p) ** 2)))


@register("mse", False, ("regression",), masked="cells")
def mse(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error over all targets."""
    return float(np.mean((y - p) ** 2))


@register("mae", False, ("regression",), masked="cells")
def mae(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute error over all targets."""
    return float(np.mean(np.abs(y - p)))


@register("mape", False, ("regression",), masked="cells")
def mape(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute percentage error, as a fraction (scikit-learn's: |y| floored at eps)."""
    return float(skm.mean_absolute_percentage_error(y, p))


@register("smape", False, ("regression",), masked="cells")
def smape(y: np.ndarray, p: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200) as Kaggle scores it; 0 where both values are 0."""
    scale = (np.abs(y) + np.abs(p)) / 2
    terms = np.divide(np.abs(p - y), scale, out=np.zeros_like(scale, dtype=np.float64),
                      where=scale > 0)
    return float(100.0 * terms.mean())


@register("rmsle", False, ("regression",), lower_bound=0.0, masked="cells")
def rmsle(y: np.ndarray, p: np.ndarray) -> float:
    """RMSE of log1p values; negative predictions are clipped to 0."""
    return float(np.sqrt(np.mean((np.log1p(np.clip(p, 0, None)) - np.log1p(y)) ** 2)))


@register("r2", True, ("regression",), masked="columns")
def r2(y: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination, averaged over targets."""
    return skm.r2_score(y, p)


@register("pearson", True, ("regression",), masked="columns")
def pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson correlation, averaged over targets."""
    return float(np.mean([np.corrcoef(y[:, j], p[:, j])[0, 1] for j in range(y.shape[1])]))


@register("spearman", True, ("regression",), order_only=True, masked="columns")
def spearman(y: np.ndarray, p: np.ndarray) -> float:
    """Spearman rank correlation, averaged over targets."""
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(y[:, j], p[:, j]).statistic for j in range(y.shape[1])]))


@register("mcrmse", False, ("regression",), masked="columns", masked_by="rmse")
def mcrmse(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over targets of each target's RMSE."""
    return float(np.sqrt(((y - p) ** 2).mean(axis=0)).mean())


def get_metric(name: str, classes: Sequence[Any] | None = None) -> Metric:
    """The registered metric called ``name``; with ``classes`` (the competition's classes in
    prediction-column order), scoring their values where the metric reads them (QWK)."""
    return METRICS.get(name).for_classes(classes)
