"""Metric-aware post-processing: decision thresholds and class weights tuned on OOF.

Label-based metrics (F1, accuracy, MCC, QWK: ``Metric.needs_labels``) score hard labels, and
0.5 / argmax is rarely the best rule. Binary and multilabel predictions get one threshold
per column; multiclass predictions get one multiplicative weight per class before the
argmax, or, under a metric of ordered classes (QWK), cut points on the expected class (the
probabilities' mean class position: a 0.5 / 0.5 split between classes 1 and 3 is a 2, where
an argmax picks an end), the better of the two on the OOF. A regression on ratings (QWK with
``task: regression``) gets cut points on its predicted value, from halfway between
neighbouring ratings (the rule that rounds to the nearest one), as Kaggle's "optimized
rounder" tunes them. Each is tuned by coordinate
search on the OOF predictions, starting from the default rule and accepting only
improvements, so the OOF score is never worse than the default. The tuned rule is saved
as ``postprocess.json`` next to the predictions and applied to the test predictions by the
submit stage.

Never worse in-sample is not never worse on unseen rows: on few rows a tuned threshold fits
noise. :func:`choose_postprocess` therefore keeps a rule only where the nested CV (each fold's
rule tuned without that fold, scored on it) beats the default rule on the same folds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_json
from pipeline.errors import ConfigError
from pipeline.metrics import Metric, get_metric

POSTPROCESS_FILE = "postprocess.json"
N_THRESHOLDS = 99  # candidate thresholds per column: quantiles of its predictions
CLASS_WEIGHT_CANDIDATES = np.geomspace(0.25, 4.0, 21)  # candidate multipliers per class
# candidate values per cut point of the expected class (QWK): quantiles of it; finer steps
# moved held-out QWK by nothing measurable, and each pass scans them for every cut
CUT_CANDIDATES = 49
_PASSES = 3
POSTPROCESS_MODES = ("auto", "on", "off")  # auto: only where the nested CV score improves


@dataclass(frozen=True)
class PostProcess:
    """A tuned rule that turns probabilities into the labels a label-based metric scores."""

    task: str
    metric: str
    thresholds: tuple[float, ...] = ()  # binary, multilabel: label j is p[:, j] >= t_j
    class_weights: tuple[float, ...] = ()  # multiclass: argmax of p * w
    # multiclass, ordered classes: the class k with cut_{k-1} <= sum_j j * p_j < cut_k;
    # regression on ratings: the rating k with cut_{k-1} <= predicted value < cut_k
    cut_points: tuple[float, ...] = ()
    ratings: tuple[float, ...] = ()  # regression: the ratings the cut points choose among
    default_score: float | None = None  # OOF score of 0.5 / argmax
    score: float | None = None  # OOF score with this rule

    def labels(self, p: np.ndarray) -> np.ndarray:
        """Class indices ``(n,)`` (multiclass), rating indices ``(n,)`` (regression) or a
        0/1 int matrix ``(n, k)``."""
        p = np.asarray(p, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        if self.task == "regression":
            return _rating_of(p, np.asarray(self.cut_points))
        if self.task == "multiclass" and self.cut_points:
            return _apply_cuts(p, np.asarray(self.cut_points))
        if self.task == "multiclass":
            return _apply_weights(p, np.asarray(self.class_weights))
        return _apply_thresholds(p, np.asarray(self.thresholds))

    def evaluate(self, y: np.ndarray, p: np.ndarray, metric: Metric | None = None) -> float:
        """The metric of the labels this rule gives for probabilities ``p`` (``metric``: the
        rule's, bound to the competition's classes; default the registered one)."""
        p = np.asarray(p, dtype=np.float64)
        scorer = metric or get_metric(self.metric)
        if self.task == "regression":  # scored as the ratings the cut points choose
            return scorer(np.asarray(y), np.asarray(self.ratings)[self.labels(p)][:, None])
        return _label_score(scorer, np.asarray(y), self.labels(p), p.shape[-1])

    def to_json(self) -> dict[str, Any]:
        """Plain dict for ``postprocess.json``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostProcess:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        for key in ("thresholds", "class_weights", "cut_points", "ratings"):
            data[key] = tuple(float(v) for v in data.get(key, ()))
        return cls(**data)


def _apply_weights(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (p * weights).argmax(axis=1)


def _apply_cuts(p: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    expected = p @ np.arange(p.shape[1], dtype=np.float64)
    return np.searchsorted(np.sort(cuts), expected, side="right")


def _rating_of(p: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(cuts), p[:, 0], side="right")


def _apply_thresholds(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return (p >= thresholds).astype(np.int64)


def _label_score(metric: Metric, y: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """The metric of hard labels, passed in the probability layout the metric expects."""
    if labels.ndim == 1:
        return metric(y, np.eye(n_classes)[labels])
    return metric(y, labels.astype(np.float64))


def _search(scorer: Metric, y: np.ndarray, p: np.ndarray, params: np.ndarray,
            candidates: list[np.ndarray], apply: Any) -> tuple[np.ndarray, float]:
    """Coordinate search from ``params``: each in turn takes the candidate value that most
    improves the score, for up to :data:`_PASSES` passes; the params and their score."""
    c = p.shape[1]
    best = _label_score(scorer, y, apply(p, params), c)
    for _ in range(_PASSES):
        improved = False
        for j in range(len(params)):
            for value in candidates[j]:
                trial = params.copy()
                trial[j] = value
                score = _label_score(scorer, y, apply(p, trial), c)
                if scorer.is_better(score, best):
                    params, best, improved = trial, score, True
        if not improved:
            break
    return params, best


def fit_postprocess(task: str, metric: str | Metric, y: np.ndarray,
                    p: np.ndarray) -> PostProcess | None:
    """Tune thresholds, class weights or cut points on OOF; None when the metric scores
    probabilities. ``metric``: a name, or a metric bound to the competition's classes (QWK's
    values)."""
    scorer = metric if isinstance(metric, Metric) else get_metric(metric)
    if not scorer.needs_labels:
        return None
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if task == "regression":
        return _fit_rating_cuts(scorer, y, p) if scorer.by_class_value else None
    c = p.shape[1]
    qs = np.linspace(0.01, 0.99, N_THRESHOLDS)
    cuts: tuple[float, ...] = ()
    if task == "multiclass":
        default = _label_score(scorer, y, p.argmax(axis=1), c)
        params, best = _search(scorer, y, p, np.ones(c), [CLASS_WEIGHT_CANDIDATES] * c,
                               _apply_weights)
        if scorer.by_class_value and c > 2:  # ordered classes: cut the expected class too
            grid = np.unique(np.quantile(p @ np.arange(c, dtype=np.float64),
                                         np.linspace(0.01, 0.99, CUT_CANDIDATES)))
            found, score = _search(scorer, y, p, np.arange(c - 1) + 0.5, [grid] * (c - 1),
                                   _apply_cuts)
            if scorer.is_better(score, best):
                cuts, best = tuple(float(v) for v in np.sort(found)), score
                params = np.ones(c)
    else:
        candidates = [np.unique(np.quantile(p[:, j], qs)) for j in range(c)]
        default = _label_score(scorer, y, _apply_thresholds(p, np.full(c, 0.5)), c)
        params, best = _search(scorer, y, p, np.full(c, 0.5), candidates, _apply_thresholds)
    values = tuple(float(v) for v in params)
    return PostProcess(
        task=task,
        metric=scorer.name,
        thresholds=values if task != "multiclass" else (),
        class_weights=values if task == "multiclass" and not cuts else (),
        cut_points=cuts,
        default_score=default,
        score=best,
    )


def _fit_rating_cuts(scorer: Metric, y: np.ndarray, p: np.ndarray) -> PostProcess:
    """Cut points between a regression's ratings (QWK), tuned from halfway between
    neighbouring ratings (rounding to the nearest, the metric's own rule)."""
    ratings = np.asarray(scorer.class_values or np.unique(y[:, 0]), dtype=np.float64)

    def rated(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:  # scored as the ratings
        return ratings[_rating_of(values, cuts)][:, None]

    start = (ratings[1:] + ratings[:-1]) / 2
    grid = np.unique(np.quantile(p[:, 0], np.linspace(0.01, 0.99, CUT_CANDIDATES)))
    default = scorer(y, rated(p, start))
    cuts, best = _search(scorer, y, p, start, [grid] * len(start), rated)
    return PostProcess(task="regression", metric=scorer.name, cut_points=tuple(
        float(v) for v in np.sort(cuts)), ratings=tuple(float(v) for v in ratings),
        default_score=default, score=best)


def load_postprocess(folder: str | Path) -> PostProcess | None:
    """The rule in ``<folder>/postprocess.json``, or None when the folder has none."""
    path = Path(folder) / POSTPROCESS_FILE
    if not path.is_file():
        return None
    return PostProcess.from_json(read_json(path))


def check_postprocess_mode(mode: str) -> str:
    """``mode`` itself; raise ConfigError unless it is one of :data:`POSTPROCESS_MODES`."""
    if mode not in POSTPROCESS_MODES:
        raise ConfigError(
            f"The 'postprocess' parameter of the blend stage must be one of "
            f"{list(POSTPROCESS_MODES)}. Got {mode!r} instead."
        )
    return mode


def choose_postprocess(
    mode: str, metric: Metric, nested_with: float, nested_without: float
) -> tuple[bool, str]:
    """Whether the final blend gets its tuned rule, and why (for the log and ``cv.json``).

    Args:
        mode: ``auto`` applies the rule only when ``nested_with`` beats ``nested_without``
            in the metric's direction (a tie keeps the default rule: no evidence it helps);
            ``on`` and ``off`` force it.
        metric: The metric both scores are in.
        nested_with: Nested CV score with each fold's rule tuned without that fold.
        nested_without: Nested CV score of the same held-out predictions, 0.5 / argmax.

    Raises:
        ConfigError: ``mode`` is not one of :data:`POSTPROCESS_MODES`.
    """
    if check_postprocess_mode(mode) != "auto":
        return mode == "on", f"forced {mode}"
    if metric.is_better(nested_with, nested_without):
        return True, "auto: it improves the nested CV score"
    return False, "auto: it does not improve the nested CV score"


def postprocess_report(pp: PostProcess, nested_with: dict[str, float], nested_without: float,
                       mode: str) -> dict[str, Any]:
    """The rule's scores and the decision, for ``cv.json``: in-sample (from 0.5 / argmax),
    nested with the rule (fold -> score of a rule tuned without that fold) and nested
    without it on the same folds, and whether the final predictions get it (``applied``)."""
    with_rule = float(np.mean(list(nested_with.values())))
    applied, reason = choose_postprocess(mode, get_metric(pp.metric), with_rule, nested_without)
    return {
        "default_score": pp.default_score,
        "in_sample": pp.score,
        "nested": {"per_fold": dict(nested_with), "mean": with_rule},
        "nested_without": float(nested_without),
        "mode": mode,
        "applied": applied,
        "decision": reason,
    }
