"""A blend method refused before its blend folder is made: one that cannot fit the metric
(an order where calibrated predictions are scored) or the members' folds (its nested CV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.ensemble import BLENDERS, WeightedBlender
from pipeline.errors import ConfigError
from pipeline.metrics import METRICS, get_metric


def check_fits_metric(method: str, metric_name: str) -> None:
    """Refuse an order-only blender (rank, power) under a metric that reads probabilities,
    labels or values: its output would be submitted as if calibrated."""
    metric = get_metric(metric_name)
    if BLENDERS.get(method).order_only and not metric.order_only:
        fits = [m for m in BLENDERS if not BLENDERS.get(m).order_only]
        raise ConfigError(
            f"blend method {method!r} outputs an order, not calibrated predictions; metric "
            f"{metric_name!r} scores the predictions themselves. Use {', '.join(fits)}, or "
            f"{method!r} under an order-based metric ("
            f"{', '.join(m for m in METRICS if METRICS.get(m).order_only)})")


def check_fits_folds(method: str, folds: np.ndarray, source: str | Path) -> None:
    """Refuse a blender whose nested CV cannot run on the members' folds, before the blend
    folder is made: it is re-tuned without each fold, and stacking then trains its
    second-level model on inner folds of the rest, so it needs 3 folds where weights need 2."""
    needed = 2 + int(BLENDERS.get(method).needs_folds)
    found = len(np.unique(folds))
    if found < needed:
        raise ConfigError(
            f"blend method {method!r} needs members trained on at least {needed} folds (its "
            f"nested CV re-fits it on inner folds without each fold); {source} has {found}. "
            f"Use another method, or members trained with folds.n_splits >= {needed}")


def check_fits_targets(method: str, missing_targets: str) -> None:
    """Refuse a blender that fits a model on the targets (stacking) where rows lack some of
    them ('competition.missing_targets: mask'): weight blenders tune the metric, which scores
    the present cells, but a second-level model would learn from the empty ones."""
    if missing_targets == "mask" and not issubclass(BLENDERS.get(method), WeightedBlender):
        fits = [m for m in BLENDERS if issubclass(BLENDERS.get(m), WeightedBlender)]
        raise ConfigError(
            f"blend method {method!r} fits a model on every target of a row, and the members' "
            "rows lack some targets ('competition.missing_targets: mask'); use "
            f"{', '.join(fits)}")
