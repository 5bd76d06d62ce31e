"""A blend refused before its blend folder is made: a method that cannot fit the metric
(an order where calibrated predictions are scored) or the members' folds (its nested CV),
and the command's own arguments (method, parameters, name, folders, storage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ensemble import BLENDERS, Blender, WeightedBlender, build_blender
from pipeline.errors import ConfigError
from pipeline.metrics import METRICS, get_metric
from pipeline.output_folders import check_name, folder_problem


def check_fits(method: str, metric_name: str, folds: np.ndarray, source: str | Path,
               missing_targets: str) -> None:
    """The three checks below: the method fits the metric, the folds and the targets."""
    check_fits_metric(method, metric_name)
    check_fits_folds(method, folds, source)
    check_fits_targets(method, missing_targets)


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


def check_blend_request(method: str, name: str | None, blends_dir: str | Path,
                        storage: str | None) -> None:
    """Refuse, before anything is read or written, a blend method no blender is registered
    under, a ``--name`` that is not a plain folder name ('../x' wrote the blend outside
    ``--blends-dir``), a ``--blends-dir`` that is or lies under a file, and an Optuna
    ``--storage`` that is a folder or a URL of a database kind SQLAlchemy does not know:
    each was a traceback, some after the blend folder was made."""
    if method not in BLENDERS:
        raise ConfigError(f"--method: {BLENDERS.unknown_message(method)}")
    if name:
        check_name(name, "--name")
    if problem := folder_problem(Path(blends_dir), "--blends-dir"):
        raise ConfigError(problem)
    if storage is None:
        return
    if "://" not in storage:  # a journal file
        if Path(storage).is_dir():
            raise ConfigError(f"--storage {storage} is a folder; give a journal file path in "
                              "it or a database URL (sqlite:///study.db)")
        if problem := folder_problem(Path(storage).parent, "--storage's folder"):
            raise ConfigError(problem)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(storage).get_dialect()
    except (ArgumentError, NoSuchModuleError, ImportError) as err:
        raise ConfigError(f"--storage {storage!r} is not a database URL SQLAlchemy can open "
                          f"({err}); e.g. sqlite:///study.db, or a journal file path") from None


def build_checked(method: str, **params: Any) -> Blender:
    """The blender ``method`` built with ``params`` (a ``--param`` it has no such name for,
    or a value it refuses, such as ``--trials 0``, is a one-line ConfigError), checked
    before the blend folder is made."""
    try:
        blender = build_blender(method, **params)
        blender.check_params()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"blend method {method!r}: {err}") from None
    return blender
