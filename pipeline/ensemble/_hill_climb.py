"""Caruana ensemble selection: greedy forward selection of members with replacement."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.ensemble._base import BLENDERS, WeightedBlender, resolve_metric
from pipeline.ensemble._objective import check_objective, objective_scorer, resolve_objective
from pipeline.metrics import Metric


@BLENDERS.register("hill_climb")
class HillClimbBlender(WeightedBlender):
    """Ensemble selection (Caruana et al., 2004) on the competition metric.

    Starts from the ``n_init`` best members (sorted initialisation), then repeatedly adds
    the member, with replacement, whose addition scores best. Every point of the trajectory
    is scored and the best one is kept, so the blend is never worse in-sample than the best
    single member. With ``n_bags > 1`` each bag selects from a random ``bag_fraction`` of
    the members and the bags' weights are averaged (less overfitting on small OOF sets).

    Args:
        metric: Name of the registered metric to optimise (or the metric itself, bound
            to the classes: QWK).
        n_iter: Additions after the initialisation.
        n_init: Best members the selection starts from.
        patience: Stop a climb after this many additions without a new best score.
        n_bags: Number of bags; 1 selects from every member once.
        bag_fraction: Share of members each bag may select from.
        seed: Seed of the bag draws.
        objective: 'pooled' (the metric of every OOF row at once), 'fold_mean' (the mean
            of the metric over the folds given to :meth:`fit`) or 'auto' ('fold_mean' under a
            metric that ranks rows across folds: ROC AUC, Gini, average precision, Spearman,
            given 2+ folds; :mod:`pipeline.ensemble._objective`).
            ``objective_`` holds the one tuned; the members' order and every step of the
            climb are scored by it.
    """

    def __init__(
        self,
        metric: str | Metric | None = None,
        n_iter: int = 100,
        n_init: int = 3,
        patience: int = 20,
        n_bags: int = 1,
        bag_fraction: float = 0.5,
        seed: int = 0,
        objective: str = "pooled",
    ) -> None:
        self.metric = metric
        self.n_iter = n_iter
        self.n_init = n_init
        self.patience = patience
        self.n_bags = n_bags
        self.bag_fraction = bag_fraction
        self.seed = seed
        self.objective = objective

    def check_params(self) -> None:
        for name in ("n_iter", "n_init", "patience", "n_bags"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"The {name!r} parameter of HillClimbBlender must be an int "
                                 f">= 0. Got {value!r}.")
        if not (isinstance(self.bag_fraction, int | float) and 0 < self.bag_fraction <= 1):
            raise ValueError(
                "The 'bag_fraction' parameter of HillClimbBlender must be in (0, 1]. "
                f"Got {self.bag_fraction!r}."
            )
        check_objective(self.objective, type(self).__name__)

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        metric = resolve_metric(self.metric, type(self).__name__)
        m = stacked.shape[0]
        self.objective_ = resolve_objective(self.objective, metric, folds, type(self).__name__)
        score = objective_scorer(self.objective_, metric, y, folds, stacked[[0, -1]])
        scores = np.array([score(p) for p in stacked])
        if self.n_bags <= 1:
            self.weights_, self.trajectory_ = self._climb(metric, stacked, score, scores,
                                                          np.arange(m))
        else:
            rng = np.random.default_rng(self.seed)
            size = max(1, round(self.bag_fraction * m))
            bags = [rng.choice(m, size=size, replace=False) for _ in range(self.n_bags)]
            climbs = [self._climb(metric, stacked, score, scores, bag) for bag in bags]
            self.weights_ = np.mean([w for w, _ in climbs], axis=0)
            self.trajectory_ = [t for _, t in climbs]
        return self._predict(stacked)

    def _climb(
        self,
        metric: Metric,
        stacked: np.ndarray,
        score: Callable[[np.ndarray], float],
        scores: np.ndarray,
        members: np.ndarray,
    ) -> tuple[np.ndarray, list[float]]:
        sign = 1.0 if metric.greater_is_better else -1.0
        members = members[np.argsort(-sign * scores[members], kind="stable")]
        counts = np.zeros(stacked.shape[0])
        total = np.zeros(stacked.shape[1:])
        trajectory: list[float] = []
        best_counts, best_score, stale = counts, -np.inf * sign, 0

        def add(i: int, score: float) -> None:
            nonlocal total, best_counts, best_score, stale
            counts[i] += 1
            total = total + stacked[i]
            trajectory.append(score)
            if metric.is_better(score, best_score):
                best_counts, best_score, stale = counts.copy(), score, 0
            else:
                stale += 1

        for i in members[: max(1, self.n_init)]:
            add(i, score((total + stacked[i]) / (counts.sum() + 1)))
        for _ in range(self.n_iter):
            if stale >= self.patience:
                break
            k = counts.sum() + 1
            candidates = [score((total + stacked[i]) / k) for i in members]
            # NaN (no fold where the metric is defined) ranks last, never first as argmax has it
            pick = int(np.argmax(np.nan_to_num(sign * np.asarray(candidates), nan=-np.inf)))
            add(members[pick], candidates[pick])
        return best_counts / best_counts.sum(), trajectory
