"""Honest blend scores: the blender tuned on k-1 folds of the OOF, scored on the held-out one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from pipeline.ensemble._base import Blender, stack_members
from pipeline.ensemble._postprocess import fit_postprocess
from pipeline.metrics import Metric


@dataclass(frozen=True)
class NestedCV:
    """Held-out scores of a blender re-fit without each fold in turn."""

    per_fold: dict[str, float]  # fold value -> score of the blend tuned without that fold
    mean: float  # mean of per_fold over the folds where the metric is defined
    pooled: float  # score of all held-out predictions together (comparable to in-sample)
    held_out: np.ndarray  # (n, c) blended prediction of every row by a blender that never saw it
    # fold value -> score of the held-out fold's labels under a post-processing rule tuned,
    # like the blender, without that fold (None: the metric scores probabilities)
    postprocessed: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """Scores as plain data (the held-out matrix is left out)."""
        return {"per_fold": self.per_fold, "mean": self.mean, "pooled": self.pooled}


def nested_cv(
    blender: Blender,
    preds: Sequence[np.ndarray] | np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    metric: Metric,
    task: str | None = None,
) -> NestedCV:
    """Score ``blender`` by refitting a clone on k-1 folds and predicting the held-out fold.

    Stacking blenders get the k-1 folds as their own (inner) folds. An Optuna study is kept
    in memory here so the nested studies never mix with the stage's stored one. With
    ``task`` and a label metric, each fold's post-processing (thresholds, class weights) is
    tuned on the inner blend of the other folds, so no label of the held-out fold reaches it.
    """
    stacked = stack_members(preds)
    y, folds = np.asarray(y), np.asarray(folds)
    values = np.unique(folds)
    if len(values) < 2 + int(blender.needs_folds):
        raise ValueError(
            f"nested CV of {type(blender).__name__} needs at least "
            f"{2 + int(blender.needs_folds)} folds. Got {len(values)}."
        )
    held_out = np.zeros(stacked.shape[1:])
    per_fold: dict[str, float] = {}
    postprocessed: dict[str, float] = {}
    for fold in values:
        train, held = folds != fold, folds == fold
        inner = clone(blender)
        if "storage" in inner.get_params():
            inner.set_params(storage=None)
        inner.fit(stacked[:, train], y[train], folds[train])
        held_out[held] = inner.predict(stacked[:, held])
        per_fold[str(fold)] = metric(y[held], held_out[held])
        rule = fit_postprocess(task, metric, y[train], inner.oof_) if task else None
        if rule is not None:
            postprocessed[str(fold)] = rule.evaluate(y[held], held_out[held], metric)
    # a fold whose metric is undefined (ROC AUC of held-out rows of one class) is left out of
    # the mean, as the run's fold mean leaves it out, rather than making the mean NaN
    scores = np.array(list(per_fold.values()), dtype=np.float64)
    defined = scores[np.isfinite(scores)]
    return NestedCV(
        per_fold=per_fold,
        mean=float(defined.mean()) if defined.size else float("nan"),
        pooled=metric(y, held_out),
        held_out=held_out,
        postprocessed=postprocessed or None,
    )
