"""The metric record and registry (:mod:`pipeline.metrics` registers the entries), and how a
metric scores targets with empty cells ('competition.missing_targets: mask').

Under that option a multilabel or multi-target regression row may lack some of its targets;
their cells are NaN in the encoded targets. Every caller scores through
:meth:`Metric.__call__`, which sees the gaps and scores the cells that hold a target only:

- ``masked="columns"``: a metric that is a mean over targets of a per-target score (ROC AUC,
  average precision, F1 macro, R2, Pearson, Spearman, MCRMSE) scores each target on the rows
  that have it (with ``masked_by``, the metric that scores one column) and averages them;
  a target undefined on its rows (one class) is left out of the mean, as those metrics do.
- ``masked="cells"``: a metric pooled over every cell (RMSE, MAE, log loss, F1 micro) is
  the same pool over the present cells.
- None: a metric over whole rows (F1 samples, multilabel accuracy) has no score for a row
  missing some labels: refused at load under the option.

Without gaps every metric scores exactly as before (the same function on the same arrays).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline.registry import Registry

TASKS = ("binary", "multiclass", "multilabel", "regression")
MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Metric:
    """A scoring function with its direction and the tasks it is defined for."""

    name: str
    fn: MetricFn
    greater_is_better: bool
    tasks: tuple[str, ...]
    needs_labels: bool = False  # scored on hard labels: the submission gets labels too
    top_k: int | None = None  # scored on the k best-ranked classes: a submission lists k labels
    # the score depends only on the order of the predictions (ROC AUC, Spearman, MAP@k), so
    # blends that output an order rather than probabilities or values (rank averaging) fit it
    order_only: bool = False
    # the lowest value the metric scores (RMSLE: 0): a lower target is refused at load, lower
    # predictions are clipped to it, by the metric and in the submission alike
    lower_bound: float | None = None
    # the score weighs a wrong class by how far its value lies from the right one's (QWK, as
    # Kaggle defines it, over the ratings' values: classes 1, 2, 4, 5 are not evenly spaced);
    # ``for_classes`` binds the values, the prediction columns' classes in their order
    by_class_value: bool = False
    class_values: tuple[float, ...] | None = None
    # how it scores targets with empty cells (see the module's doc); None: it cannot
    masked: Literal["columns", "cells"] | None = None
    masked_by: str | None = None  # the metric that scores one column or the pooled cells

    def __call__(self, y: np.ndarray, p: np.ndarray) -> float:
        y, p = np.asarray(y), np.asarray(p)
        if y.dtype.kind == "f" and np.isnan(y).any():  # 'competition.missing_targets: mask'
            return _score_present(self, y, p)
        return float(self.fn(y, p))

    def for_classes(self, classes: Sequence[Any] | None) -> Metric:
        """This metric scoring the classes ``classes`` (the prediction columns' labels, in
        order): a metric weighing by class value reads their values; any other is itself."""
        if not self.by_class_value or not classes or not all(map(is_number, classes)):
            return self
        values = tuple(float(c) for c in classes)
        valued: Callable[..., float] = self.fn  # such a metric takes ``values=``
        return dataclasses.replace(self, fn=functools.partial(valued, values=values),
                                   class_values=values)

    @property
    def direction(self) -> str:
        """'maximize' or 'minimize', as Optuna spells it."""
        return "maximize" if self.greater_is_better else "minimize"

    def is_better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats score ``b``."""
        return a > b if self.greater_is_better else a < b

    def ranks_on(self, task: str, y: np.ndarray, n_outputs: int) -> bool:
        """Whether the metric can rank predictions of targets ``y`` at all: a perfect one
        scores a finite number and, for a classification task, another than a prediction
        wrong on every row. ROC AUC of rows of one class, or a correlation with a constant
        target, is NaN whatever is predicted; F1, MCC or QWK of rows of one class is the
        same for every prediction. No epoch (or tree) can be chosen by such a score."""
        y = np.asarray(y)
        multiclass = y.ndim == 1  # class indices
        perfect = np.eye(n_outputs)[y] if multiclass else y.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the undefined cases warn; they are the answer
            best = self(y, perfect)
            if not math.isfinite(best):
                return False
            if task == "regression":
                return True
            wrong = np.eye(n_outputs)[(y + 1) % n_outputs] if multiclass else 1.0 - perfect
            worst = self(y, wrong)
        return math.isfinite(worst) and not math.isclose(best, worst, abs_tol=1e-12)


METRICS: Registry[Metric] = Registry("metric")


def is_number(value: Any) -> bool:
    """Whether a class label is a number (a bool is not: it names a yes/no class)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def register(
    name: str, greater_is_better: bool, tasks: tuple[str, ...], needs_labels: bool = False,
    order_only: bool = False, lower_bound: float | None = None, by_class_value: bool = False,
    masked: Literal["columns", "cells"] | None = None, masked_by: str | None = None,
) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn`` as metric ``name`` (the fields of :class:`Metric`)."""

    def decorator(fn: MetricFn) -> MetricFn:
        doc = (fn.__doc__ or name).strip().splitlines()[0]
        METRICS.add(name, Metric(name, fn, greater_is_better, tasks, needs_labels,
                                 order_only=order_only, lower_bound=lower_bound,
                                 by_class_value=by_class_value, masked=masked,
                                 masked_by=masked_by), doc)
        return fn

    return decorator




def _score_present(metric: Metric, y: np.ndarray, p: np.ndarray) -> float:
    """``metric`` over the cells of ``y`` that hold a target (see the module's doc)."""
    if metric.masked is None:
        raise ValueError(f"metric {metric.name!r} scores whole rows, so it cannot score "
                         "targets with empty cells ('competition.missing_targets: mask')")
    by = METRICS.get(metric.masked_by) if metric.masked_by else metric
    present = ~np.isnan(y)
    if metric.masked == "cells":
        return by(y[present][:, None], p[present][:, None])
    scores = [by(y[rows, j:j + 1], p[rows, j:j + 1])
              for j, rows in enumerate(present.T) if rows.any()]
    defined = [s for s in scores if math.isfinite(s)]
    return float(np.mean(defined)) if defined else math.nan
