"""What tuning a post-processing rule is estimated to cost, so that a stage can leave out a
search that would hold it up (many labels over many rows, under a costly metric: thousands of
calls). The run's gather and the blend stage share the estimate and its budget."""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.ensemble._postprocess import CLASS_WEIGHT_CANDIDATES, CUT_CANDIDATES, N_THRESHOLDS
from pipeline.metrics import Metric, hard_labels

log = logging.getLogger(__name__)
# estimated seconds above which 'auto' / 'off' leave the rule untuned (0.5 / argmax), with a
# warning; 'on' tunes regardless
POSTPROCESS_BUDGET_S = 300


def postprocess_seconds(task: str, metric: Metric, y: np.ndarray, oof: np.ndarray,
                        n_folds: int) -> float:
    """Rough cost of the tuning and its nested CV: one timed metric call on hard labels times
    the calls of the coordinate search (each column's candidates over two passes, the usual
    count: one that moves, one that finds nothing better) in-sample and once per fold."""
    p = oof[:, None] if oof.ndim == 1 else oof
    columns = p.shape[1]
    labels = hard_labels(task, p)
    hard = np.eye(columns)[labels] if task == "multiclass" else labels.astype(np.float64)
    calls = []
    for _ in range(2):  # the faster of two: the first may pay one-off costs
        start = time.perf_counter()
        metric(y, hard)
        calls.append(time.perf_counter() - start)
    call = min(calls)
    candidates = len(CLASS_WEIGHT_CANDIDATES) if task == "multiclass" else N_THRESHOLDS
    if task == "multiclass" and metric.by_class_value:  # QWK also searches cut points
        candidates += CUT_CANDIDATES
    if task == "regression":  # a cut point between each two neighbouring ratings (QWK)
        columns = max(len(metric.class_values or np.unique(y[:, 0])) - 1, 1)
        candidates = CUT_CANDIDATES
    return call * columns * candidates * 2 * (n_folds + 1)


def default_rule(task: str) -> str:
    """How labels are made without a tuned rule, for the log."""
    return {"multiclass": "argmax", "regression": "the nearest rating"}.get(task, "0.5")


def tuning_affordable(what: str, task: str, metric: Metric, y: np.ndarray, oof: np.ndarray,
                      n_folds: int, mode: str, budget_s: float | None = None) -> bool:
    """Whether ``what`` (a run, a blend) tunes its post-processing: always under
    ``mode`` 'on', else where the estimate stays within ``budget_s`` (default
    :data:`POSTPROCESS_BUDGET_S`); a warning says what a search left out costs and how to
    force it."""
    if mode == "on":
        return True
    budget_s = POSTPROCESS_BUDGET_S if budget_s is None else budget_s
    seconds = postprocess_seconds(task, metric, y, oof, n_folds)
    if seconds <= budget_s:
        return True
    log.warning("%s: post-processing not tuned: ~%.0f s of metric calls estimated (over %d s); "
                "the submission labels with %s. 'predict.postprocess: on' (a blend: "
                "--postprocess on) tunes and applies it regardless", what, seconds, budget_s,
                default_rule(task))
    return False
