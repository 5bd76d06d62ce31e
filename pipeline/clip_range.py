"""A regression's submitted values held to the train target's range, where its OOF says so.

No target value of the test rows lies outside the train rows' range when both are drawn alike,
so a prediction beyond it is an error a clip can only shrink: networks and linear models
overshoot on rows unlike their training rows (GBDTs rarely do: a leaf averages train targets).
Where the target trends (sales that grow past every train row), the clip throws away what the
model extrapolated right. Which of the two a competition is, its OOF tells, if each fold is
held to the range *its own training rows* span: under random folds that range is the whole
train range and clipping helps or changes nothing; under time-ordered folds (a later period
held out) it cuts the growth the fold's model predicted, and the OOF gets worse. So ``auto``
clips the submission to the whole train range only where the OOF clipped fold by fold scores
better than the OOF as it is (a tie: no evidence, no clip); ``on`` and ``off`` force it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import Metric

CLIP_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ClipDecision:
    """Whether the submission's values are clipped, to which range, and the evidence."""

    applied: bool
    low: np.ndarray  # per target column: the train rows' smallest target
    high: np.ndarray  # ... and largest
    reason: str
    oof_without: float | None = None  # the metric of the OOF as it is
    oof_with: float | None = None  # ... and clipped fold by fold to its training rows' range

    def apply(self, p: np.ndarray) -> np.ndarray:
        """``p`` clipped to the range when the decision is to clip, else ``p`` itself."""
        return np.clip(p, self.low, self.high) if self.applied else p


def _range(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # NaN cells (masked targets) are rows without that target: they span nothing, and a
    # target no row holds bounds nothing (np.clip would turn every value into NaN)
    present = ~np.isnan(y)
    low = np.where(present, y, np.inf).min(axis=0)
    high = np.where(present, y, -np.inf).max(axis=0)
    none = ~present.any(axis=0)
    return np.where(none, -np.inf, low), np.where(none, np.inf, high)


def decide_clip(mode: str, metric: Metric, y: np.ndarray, oof: np.ndarray,
                folds: np.ndarray) -> ClipDecision:
    """The clip of a regression's submission (see the module's doc).

    Args:
        mode: ``auto`` (clip where the OOF clipped fold by fold scores better), ``on``, ``off``.
        metric: The competition's metric (its ``lower_bound`` applies before either score, as
            the submission applies it).
        y: Targets of the OOF rows ``(n, t)``; NaN where a row lacks a target.
        oof: OOF predictions ``(n, t)``.
        folds: The fold that held out each OOF row.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"clip must be one of {list(CLIP_MODES)}, got {mode!r}")
    y = np.asarray(y, dtype=np.float64).reshape(len(folds), -1)
    oof = np.asarray(oof, dtype=np.float64).reshape(len(folds), -1)
    low, high = _range(y)
    if mode != "auto":
        return ClipDecision(mode == "on", low, high, f"forced {mode}")
    floor = metric.lower_bound
    raw = oof if floor is None else np.maximum(oof, floor)
    clipped = raw.copy()
    for fold in np.unique(folds):
        held = folds == fold
        if held.all():  # no training rows outside this fold (a single-fold layout)
            continue
        fold_low, fold_high = _range(y[~held])
        clipped[held] = np.clip(raw[held], fold_low, fold_high)
    without, with_clip = metric(y, raw), metric(y, clipped)
    if metric.is_better(with_clip, without):
        return ClipDecision(True, low, high, "auto: the OOF clipped fold by fold scores better",
                            without, with_clip)
    return ClipDecision(False, low, high, "auto: the OOF clipped fold by fold scores no better",
                        without, with_clip)
