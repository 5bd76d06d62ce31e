"""Blenders with fixed equal weights: arithmetic, rank and power averaging."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from pipeline.ensemble._base import BLENDERS, WeightedBlender, renormalise
from pipeline.metrics import Metric, get_metric


@BLENDERS.register("mean")
class MeanBlender(WeightedBlender):
    """Equal-weight average of the members: the baseline every other blender must beat."""

    oof_held_out = True  # nothing is fitted on the labels

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        self.weights_ = np.full(stacked.shape[0], 1.0 / stacked.shape[0])
        return self._predict(stacked)


@BLENDERS.register("rank")
class RankBlender(WeightedBlender):
    """Average of ranks scaled to (0, 1]: for ranking metrics such as ROC AUC or MAP@k.

    Ranks are taken where the metric reads the order: within each column over the rows being
    predicted (OOF at fit, test at predict; ROC AUC, average precision, Spearman), as
    competitors do, so members on different scales or calibrations mix fairly; under a
    metric that scores each row's best classes (MAP@k: ``Metric.top_k``), within each row
    over its classes, since a class's rank among the rows says nothing about its place in
    its own row (a member blended with itself fell from MAP@3 0.89 to 0.78 so). The output is
    an order, not a probability: multiclass rows are renormalised but not calibrated.

    Args:
        metric: The competition metric (a name or a :class:`~pipeline.metrics.Metric`);
            None ranks within columns.
    """

    order_only = True  # only metrics that read the order of predictions may take it
    oof_held_out = True  # equal weights: nothing is fitted on the labels

    def __init__(self, metric: str | Metric | None = None) -> None:
        self.metric = metric

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        self.weights_ = np.full(stacked.shape[0], 1.0 / stacked.shape[0])
        return self._predict(stacked)

    def _predict(self, stacked: np.ndarray) -> np.ndarray:
        if self._within_rows():
            c = stacked.shape[2]
            ranks = rankdata(stacked, axis=2) / c
            blended = np.einsum("m,mnc->nc", self.weights_, ranks)
            # equal mean ranks (members that swap two classes) go to the class the members'
            # mean prediction favours, not to the lower index: the tie-break term stays
            # below half the smallest step of a mean rank (1 / (c * m) for m members)
            mean = np.einsum("m,mnc->nc", self.weights_, stacked)
            span = np.ptp(mean) or 1.0
            blended += (mean - mean.min()) / span * 0.25 / (c * stacked.shape[0])
        else:
            ranks = rankdata(stacked, axis=1) / stacked.shape[1]
            blended = np.einsum("m,mnc->nc", self.weights_, ranks)
        return renormalise(blended) if self.task_ == "multiclass" else blended

    def _within_rows(self) -> bool:
        if self.metric is None or self.task_ != "multiclass":
            return False
        metric = self.metric if isinstance(self.metric, Metric) else get_metric(self.metric)
        return metric.top_k is not None


@BLENDERS.register("power")
class PowerBlender(WeightedBlender):
    """Power mean ``(mean_i p_i ** power) ** (1 / power)`` of non-negative predictions.

    ``power > 1`` lets confident members speak louder than in the arithmetic mean. The
    ``1 / power`` root keeps the result in [0, 1], but not calibrated: for binary 0.2 and 0.8
    merge to 0.58, not 0.5. So, like rank averaging, it is for metrics that read the order.

    Args:
        power: The exponent; 1 is the arithmetic mean.
    """

    order_only = True
    oof_held_out = True  # equal weights: nothing is fitted on the labels

    def __init__(self, power: float = 2.0) -> None:
        self.power = power

    def check_params(self) -> None:
        if not (isinstance(self.power, int | float) and self.power > 0):
            raise ValueError(
                f"The 'power' parameter of PowerBlender must be > 0. Got {self.power!r}."
            )

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        self.weights_ = np.full(stacked.shape[0], 1.0 / stacked.shape[0])
        return self._predict(stacked)

    def _predict(self, stacked: np.ndarray) -> np.ndarray:
        if (stacked < 0).any():
            raise ValueError("power averaging needs non-negative predictions. Got negatives.")
        blended = np.einsum("m,mnc->nc", self.weights_, stacked**self.power) ** (1 / self.power)
        return renormalise(blended) if self.task_ == "multiclass" else blended
