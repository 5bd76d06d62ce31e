"""What a tuned blender optimises: the metric of the pooled OOF, or the mean of its folds'.

Under a metric that ranks rows against each other (ROC AUC, Gini, average precision,
Spearman), the pooled OOF score also rewards calibration *across* folds: each fold's rows
were predicted by another fold model, on its own scale, and pooling ranks one fold's
positives against another's negatives. The test rows never see that: they are scored on the
fold models' mean. Tuning on the mean of the per-fold scores leaves the cross-fold scales out;
offline it won held-out on three rare-positive tables, but built into the blenders it was a
wash on four more (``docs/benchmarks.md``): an option, not the default.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.ensemble._base import blend_scorer
from pipeline.metrics import Metric

# ``objective`` values of the tuned blenders (optuna, hill_climb; default 'pooled': the
# folds' mean measured a wash held-out, docs/benchmarks.md): 'auto' is 'fold_mean' under a
# metric that ranks rows against each other (given 2+ folds), 'pooled' elsewhere
OBJECTIVES = ("auto", "fold_mean", "pooled")
FOLD_MEAN, POOLED = "fold_mean", "pooled"


def ranks_across_rows(metric: Metric) -> bool:
    """Whether the metric's score compares rows with each other, so that rows predicted by
    different fold models meet in one pooled score. MAP@k is order-only within one row (its
    pooled score is a mean over rows, the folds' sizes weighing it): not one of them."""
    return metric.order_only and metric.top_k is None


def check_objective(value: object, owner: str) -> None:
    """Raise ValueError naming ``owner``'s 'objective' parameter unless it is one of
    :data:`OBJECTIVES`."""
    if not (isinstance(value, str) and value in OBJECTIVES):
        raise ValueError(f"The 'objective' parameter of {owner} must be one of "
                         f"{', '.join(OBJECTIVES)}. Got {value!r}.")


def resolve_objective(objective: str, metric: Metric, folds: np.ndarray | None,
                      owner: str = "the blender") -> str:
    """'fold_mean' or 'pooled': what ``objective`` means for this metric and these folds.

    'auto' tunes the folds' mean under a metric that ranks rows across folds
    (:func:`ranks_across_rows`) where there are 2 or more folds; one fold's mean is the
    pooled score. An explicit 'fold_mean' needs the folds.
    """
    check_objective(objective, owner)
    n_folds = 0 if folds is None else len(np.unique(folds))
    if objective == "auto":
        return FOLD_MEAN if ranks_across_rows(metric) and n_folds >= 2 else POOLED
    if objective == FOLD_MEAN and folds is None:
        raise ValueError("objective 'fold_mean' needs the fold of every OOF row: "
                         "pass folds to fit")
    return objective


def objective_scorer(
    objective: str,
    metric: Metric,
    y: np.ndarray,
    folds: np.ndarray | None,
    probes: Sequence[np.ndarray] | np.ndarray,
) -> Callable[[np.ndarray], float]:
    """``p -> score`` of a blend of every OOF row under a resolved ``objective``.

    'pooled' is ``metric(y, p)`` (:func:`blend_scorer`); 'fold_mean' the mean of the metric
    of each fold's rows, each fold with its own scorer (ROC AUC's fast path prepared per
    fold). A fold where the metric is undefined (its rows of one class) is left out of the
    mean, as the nested CV's mean leaves it out; with none defined the score is NaN, which
    every tuner ranks last.
    """
    if objective == POOLED:
        return blend_scorer(metric, y, list(probes))
    assert folds is not None  # resolve_objective refuses fold_mean without folds
    # rows sorted by fold once: each call gathers the blend once and scores contiguous views
    # (a boolean mask per fold cost as much as the five ROC AUCs: 5 ms at 40,000 rows)
    order = np.argsort(folds, kind="stable")
    edges = [0, *(np.flatnonzero(np.diff(folds[order])) + 1), len(order)]
    rows = [slice(a, b) for a, b in itertools.pairwise(edges)]
    y_sorted = np.take(y, order, axis=0)
    scorers = [blend_scorer(metric, y_sorted[r], [np.take(p, order, axis=0)[r] for p in probes])
               for r in rows]

    def score(p: np.ndarray) -> float:
        p = np.take(p, order, axis=0)
        values = np.array([s(p[r]) for s, r in zip(scorers, rows, strict=True)])
        defined = values[np.isfinite(values)]
        return float(defined.mean()) if defined.size else float("nan")

    return score


def describe(objective: str, metric_name: str) -> str:
    """The tuned objective in words, for the blend's log."""
    if objective == FOLD_MEAN:
        return f"the mean of the folds' {metric_name} ('objective: fold_mean')"
    return f"the {metric_name} of the pooled OOF ('objective: pooled')"
