"""Regression target transforms a competitor wraps around any member: ``log1p`` (the RMSLE
trick), ``standardize``, and scikit-learn's power transforms ``box-cox`` and
``yeo-johnson``. Fitted on a fold's training targets, applied before the member fits, and
inverted on its predictions, so OOF and test files stay in the targets' own units.

:class:`TargetTransform` is a scikit-learn transformer over a ``(rows, targets)`` matrix, so
it also serves as ``TransformedTargetRegressor``'s ``transformer``, and its fitted state is
plain numbers (:meth:`TargetTransform.state`) that a fold folder keeps as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import PowerTransformer

from pipeline.errors import DataError

TARGET_TRANSFORMS = ("none", "log1p", "standardize", "box-cox", "yeo-johnson")
# the transform a metric scores in, given to a regression that does not name one
_METRIC_SPACE = {"rmsle": "log1p"}


def metric_default(data: Any) -> Any:
    """Config data with ``model.target_transform`` filled in from the metric where the config
    leaves it out: an RMSLE regression fits in log1p space (the metric's), so the members'
    squared error is the metric's and a skewed target's largest values do not drive the fit
    (a probe: held-out RMSLE 3.27 fitted on the raw target, 0.50 on its log1p). An explicit
    ``target_transform`` (``none`` included) is kept."""
    comp, model = (data.get(k) if isinstance(data, dict) else None
                   for k in ("competition", "model"))
    if not isinstance(comp, dict) or not isinstance(model, dict) or "target_transform" in model:
        return data
    kind = _METRIC_SPACE.get(comp.get("metric")) if comp.get("task") == "regression" else None
    return data if kind is None else {**data, "model": {**model, "target_transform": kind}}
_LOWER = {"log1p": (0.0, "negative", ">= 0"), "box-cox": (None, "non-positive", "> 0")}


class TargetTransform(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """One transform of regression targets (``kind`` in :data:`TARGET_TRANSFORMS`).

    Args:
        kind: the transform.
        columns: the target columns' names, for error messages.
    """

    def __init__(self, kind: str = "none", columns: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.columns = columns

    def _matrix(self, y: Any) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        return y.reshape(len(y), -1)

    def check(self, y: Any) -> None:
        """Refuse targets outside the transform's domain.

        Raises:
            DataError: log1p with a negative target, Box-Cox with one <= 0 (naming the
                column and its minimum).
        """
        if self.kind not in _LOWER:
            return
        y = self._matrix(y)
        bound, what, need = _LOWER[self.kind]
        for j in range(y.shape[1]):
            low = float(np.nanmin(y[:, j]))
            if low < 0 or (bound is None and low <= 0):
                name = self.columns[j] if j < len(self.columns) else str(j)
                raise DataError(f"'model.target_transform: {self.kind}' needs targets {need}; "
                                f"column {name!r} has {what} values (min {low:g})")

    def fit(self, y: Any, _: Any = None) -> TargetTransform:
        """Learn the transform from the training targets ``y`` (rows, targets)."""
        if self.kind not in TARGET_TRANSFORMS:
            raise ValueError(f"'kind' of TargetTransform must be one of "
                             f"{', '.join(TARGET_TRANSFORMS)}. Got {self.kind!r}.")
        y = self._matrix(y)
        self.check(y)
        self.mean_ = np.zeros(y.shape[1])
        self.std_ = np.ones(y.shape[1])
        self.lambdas_ = np.zeros(y.shape[1])
        if self.kind == "standardize":
            # NaN: a target a row lacks ('competition.missing_targets: mask')
            gaps = np.isnan(y).any()
            self.mean_ = (np.nanmean if gaps else np.mean)(y, axis=0)
            self.std_ = (np.nanstd if gaps else np.std)(y, axis=0) + 1e-12
        elif self.kind in ("box-cox", "yeo-johnson"):
            # no standardisation inside: networks standardise after, trees need none
            power = PowerTransformer(self.kind, standardize=False).fit(y)
            self.lambdas_ = power.lambdas_
            z = power.transform(y)  # the span of the training targets where members fit
            self.low_, self.high_ = np.nanmin(z, axis=0), np.nanmax(z, axis=0)
        return self

    def _power(self) -> PowerTransformer:
        power = PowerTransformer(self.kind, standardize=False)
        power.lambdas_ = np.asarray(self.lambdas_, dtype=np.float64)
        power.n_features_in_ = len(power.lambdas_)
        return power

    def transform(self, y: Any) -> np.ndarray:
        """Targets in the space the member fits (same shape as ``y``)."""
        shape, y = np.shape(y), self._matrix(y)
        if self.kind == "log1p":
            out = np.log1p(y)
        elif self.kind == "standardize":
            out = (y - self.mean_) / self.std_
        elif self.kind in ("box-cox", "yeo-johnson"):
            self.check(y)
            out = self._power().transform(y)
        else:
            out = y
        return out.reshape(shape)

    def inverse_transform(self, y: Any) -> np.ndarray:
        """Member outputs back in the targets' units (same shape as ``y``)."""
        shape, y = np.shape(y), self._matrix(y)
        if self.kind == "log1p":
            out = np.expm1(y)
        elif self.kind == "standardize":
            out = y * self.std_ + self.mean_
        elif self.kind in ("box-cox", "yeo-johnson"):
            out = self._power().inverse_transform(self._invertible(y))
        else:
            out = y
        return out.reshape(shape)

    def in_domain(self, y: Any) -> np.ndarray:
        """``y`` (another run's predictions: pseudo-labels) held to the targets this
        transform takes: log1p's >= 0, Box-Cox's > 0 (up to the smallest training target).
        A source fitted on the raw target predicts below 0 for its smallest ones: log1p made
        those labels NaN, and a network trained on them NaN in every output."""
        shape, y = np.shape(y), self._matrix(y)
        if self.kind == "log1p":
            y = np.maximum(y, 0.0)
        elif self.kind == "box-cox" and len(getattr(self, "low_", [])):
            y = np.maximum(y, self._power().inverse_transform(np.atleast_2d(self.low_)))
        return y.reshape(shape)

    def _invertible(self, z: np.ndarray) -> np.ndarray:
        """``z`` with the values the power's inverse has no value for (its base
        ``lambda * z + 1`` at or below 0: NaN, or inf at 0) set to the training targets' end
        on that side. With a negative lambda (a right-skewed target: prices, counts) the
        transformed values are bounded above by ``-1 / lambda``, close above the largest
        training target's, so a linear model or network that overshoots it on one unusual
        test row made that row NaN and the submission was refused."""
        low, high = getattr(self, "low_", None), getattr(self, "high_", None)
        if low is None or high is None or not len(low):  # a fold fitted before the span
            return z
        lam = np.asarray(self.lambdas_, dtype=np.float64)
        with np.errstate(divide="ignore"):
            if self.kind == "box-cox":  # lambda * z + 1 > 0
                upper = np.where(lam < 0, -1 / lam, np.inf)
                lower = np.where(lam > 0, -1 / lam, -np.inf)
            else:  # z >= 0: lambda * z + 1 > 0; z < 0: (lambda - 2) * z + 1 > 0
                upper = np.where(lam < 0, -1 / lam, np.inf)
                lower = np.where(lam > 2, -1 / (lam - 2), -np.inf)
        z = np.where(z >= upper, high, z)
        return np.where(z <= lower, low, z)

    def state(self) -> dict[str, Any]:
        """The fitted transform as JSON-ready data (:meth:`from_state` rebuilds it)."""
        fitted = {key: [float(v) for v in getattr(self, f"{key}_", [])]
                  for key in ("mean", "std", "lambdas", "low", "high")}  # 'none' needs no fit
        return {"kind": self.kind, "columns": list(self.columns), **fitted}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TargetTransform:
        """The transform :meth:`state` described, fitted as it was."""
        out = cls(state["kind"], tuple(state.get("columns", ())))
        out.mean_, out.std_ = np.array(state.get("mean", [])), np.array(state.get("std", []))
        out.lambdas_ = np.array(state.get("lambdas", []))
        # the transformed training targets' span (power kinds; absent from older folds)
        out.low_, out.high_ = np.array(state.get("low", [])), np.array(state.get("high", []))
        return out
