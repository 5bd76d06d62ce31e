"""Exact zeros for members a tuned blend does not need."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.ensemble._base import simplex
from pipeline.metrics import Metric


def drop_small_weights(
    weights: np.ndarray,
    score: Callable[[np.ndarray], float],
    metric: Metric,
    below: float,
) -> tuple[np.ndarray, float]:
    """Zero members with weight under ``below``, smallest first, while the score holds.

    Continuous samplers never propose an exact zero, so a useless member keeps a sliver of
    weight; dropping it is accepted only when ``score`` of the renormalised weights is not
    worse. ``weights`` is ``(m,)`` or ``(m, c)`` (a member is dropped from every class).

    Returns:
        The weights after dropping and their score.
    """
    weights = np.asarray(weights, dtype=np.float64)
    best = score(weights)
    per_member = weights.mean(axis=1) if weights.ndim == 2 else weights
    for i in np.argsort(per_member):
        if per_member[i] >= below or per_member[i] == 0:
            continue
        trial = weights.copy()
        trial[i] = 0.0
        if not trial.any():
            break
        trial = simplex(trial)
        new = score(trial)
        if not metric.is_better(best, new):
            weights, best = trial, new
    return weights, best
