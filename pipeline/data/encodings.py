"""Category encodings a competitor adds beside the ordinal or native codes: target encoding
(scikit-learn's ``TargetEncoder``), count and frequency encoding; each adds numeric columns
per categorical column.

Everything here is fitted on a fold's training rows only. Target encoding is the one that
can leak: :meth:`CategoryEncodings.fit_transform` returns the training rows' values
*cross-fitted* (each row encoded by a ``TargetEncoder`` fitted on the other inner folds,
scikit-learn's own ``fit_transform``), so a model never sees a training row encoded with its
own label; :meth:`CategoryEncodings.transform` (validation, test) uses the encoder fitted on
every training row. A scikit-learn ``Pipeline`` calls ``fit_transform`` with ``y`` when it
fits and ``transform`` when it predicts, so the estimator inside gets exactly this.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn
from pydantic import Field, field_validator
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import TargetEncoder

from pipeline.data.text_features import TextFeaturesConfig
from pipeline.schema import Section

ENCODINGS = ("target", "count", "frequency")
HIGH_CARDINALITY = 200  # levels: model.tabular.high_cardinality's default
_MISSING = "__missing__"  # counted as a value of its own (a missing value says something too)
# the TargetEncoder target type per competition task (multilabel: one binary encoder per label)
TARGET_TYPE = {"binary": "binary", "multilabel": "binary", "multiclass": "multiclass",
               "regression": "continuous"}


class TabularConfig(Section):
    """``model.tabular``: how a whole tabular model sees categories, fitted per fold."""

    # 'sklearn:' members: ordinal codes (trees) or one-hot columns (linear models, SVMs);
    # auto: one-hot for a model that is no tree ensemble and takes sparse input, else ordinal
    # (models.sklearn.one_hot_categories)
    categories: Literal["auto", "ordinal", "onehot"] = "auto"
    # numeric columns added per categorical column ('sklearn:' and GBDT members)
    encodings: list[Literal["target", "count", "frequency"]] = Field(default_factory=list)
    target_cv: int = Field(5, ge=2)  # inner folds of the target encoding's cross-fitting
    # LightGBM and XGBoost members: a categorical column with more than this many distinct
    # values in a fold's training rows reaches the trees as target + count encodings instead
    # of native codes, whose splits on hundreds of levels overfit (docs/benchmarks.md,
    # "High-cardinality categories for GBDT members"); 'native': codes for every column, as
    # before 2026-11-29. CatBoost keeps its own target statistics of every column.
    high_cardinality: int | Literal["native"] = HIGH_CARDINALITY
    target_smooth: float | Literal["auto"] = "auto"  # TargetEncoder's shrinkage to the mean
    # TF-IDF of competition.text_columns for the members without a text encoder of their own
    text: TextFeaturesConfig = Field(default_factory=TextFeaturesConfig)

    @field_validator("high_cardinality", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        # checked here: pydantic's own message for a union lists each member's failure
        if value == "native" or (isinstance(value, int) and not isinstance(value, bool)
                                 and value >= 1):
            return value
        raise ValueError("must be an int >= 1 (columns with more distinct values are "
                         f"target + count encoded) or 'native'. Got {value!r}")

    @field_validator("encodings")
    @classmethod
    def _unique(cls, encodings: list[str]) -> list[str]:
        if len(set(encodings)) != len(encodings):
            raise ValueError(f"each encoding at most once. Got {encodings}")
        return encodings


# an integer written as a float ('3.0'): a column read as text in one file (a '?' cell among
# its codes) and as floats in the other (3.0, "3") had every value unseen there
_WHOLE_FLOAT = re.compile(r"(-?[1-9]\d*|0)\.0+")


def _category(value: Any) -> Any:
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return np.nan
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    text = str(value)
    whole = _WHOLE_FLOAT.fullmatch(text)
    return whole.group(1) if whole else text


def _normalised(column: pd.Series) -> np.ndarray:
    # Each distinct value is normalised once, then spread by its codes: a column of 600,000
    # rows with 1,000 categories costs 1,000 calls instead of 600,000 (seconds a call on a
    # large table, paid per fold). Hashing merges values that compare equal; they normalise
    # alike (3 and 3.0 are "3"), except a bool and a number (True == 1, "True" and "1"): an
    # object column holding bools among other values takes the value-by-value way.
    if _bools_among_other_values(column):
        return column.map(_category).to_numpy(dtype=object)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    table = np.array([*map(_category, np.asarray(uniques, dtype=object)), np.nan], dtype=object)
    return table[codes]  # code -1 (missing) picks the trailing NaN


def _bools_among_other_values(column: pd.Series) -> bool:
    return (column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in (
        "string", "empty", "boolean", "integer", "floating", "mixed-integer-float")
        and bool(column.map(lambda v: isinstance(v, bool | np.bool_)).any()))


def normalise_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Category values as strings that do not depend on how pandas typed the column
    (``3``, ``3.0``, ``"3"`` and ``"3.0"`` are all ``"3"``); missing values stay NaN."""
    return pd.DataFrame({c: pd.Series(_normalised(frame[c]), index=frame.index, dtype=object)
                         for c in frame.columns}, index=frame.index)


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    """Category values as strings, missing ones as a value of their own."""
    return normalise_categories(frame).fillna(_MISSING)


def _cross_fitted(enc: TargetEncoder, values: pd.DataFrame, target: np.ndarray) -> np.ndarray:
    """``enc`` fitted on the rows that have ``target`` and their cross-fitted encodings. A
    row without it (NaN: 'competition.missing_targets: mask') teaches nothing and gets the
    encoder fitted on the others, as a validation row does: it has no label to leak, and the
    encoder refused the NaN ("Input y contains NaN") for every row."""
    held = ~np.isnan(target) if target.dtype.kind == "f" else np.ones(len(target), bool)
    if held.all():
        return np.asarray(enc.fit_transform(values, target))
    fitted = np.asarray(enc.fit_transform(values[held], target[held]))
    out = np.asarray(enc.transform(values), dtype=np.float64)
    out[held] = fitted
    return out


class CategoryEncodings(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Target, count and/or frequency encodings of categorical columns (numeric output).

    Args:
        encodings: which of ``target``, ``count``, ``frequency``, in output order.
        task: the competition task (decides the TargetEncoder's target type).
        cv: inner folds of the target encoding's cross-fitting.
        smooth: TargetEncoder's ``smooth``.
        random_state: seed of the inner folds.
    """

    def __init__(self, encodings: tuple[str, ...] = ("target",), task: str = "binary",
                 cv: int = 5, smooth: float | str = "auto", random_state: int = 0) -> None:
        self.encodings = encodings
        self.task = task
        self.cv = cv
        self.smooth = smooth
        self.random_state = random_state

    def _targets(self, y: Any) -> list[np.ndarray]:
        """One target vector per encoder: per label/target when ``y`` has several columns."""
        y = np.asarray(y)
        if y.ndim == 2 and self.task != "multiclass":
            return [y[:, j] for j in range(y.shape[1])]
        return [y.reshape(-1)]

    def _fit_counts(self, x: pd.DataFrame) -> None:
        self.counts_ = {c: x[c].value_counts().to_dict() for c in x.columns}
        self.n_rows_ = len(x)

    def _counts(self, x: pd.DataFrame, share: bool) -> np.ndarray:
        cols = [x[c].map(self.counts_[c]).fillna(0.0).to_numpy(np.float64) for c in x.columns]
        out = np.stack(cols, axis=1) if cols else np.zeros((len(x), 0))
        return out / self.n_rows_ if share else out  # unseen values: count 0

    def _target_encoder(self, target: np.ndarray) -> TargetEncoder:
        kind = TARGET_TYPE[self.task]
        if kind == "multiclass" and len(np.unique(target)) < 3:
            # a fold whose training rows hold two of the classes (a class rarer than the
            # folds): scikit-learn's multiclass encoder binarises them into one column and
            # then indexes a second (IndexError); as binary it encodes the larger label's share
            kind = "binary"
        # scikit-learn 1.9 takes the shuffled inner folds as a splitter (shuffle and
        # random_state are deprecated there); earlier releases only as the two params
        if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 9):
            splitter = (KFold if kind == "continuous" else StratifiedKFold)(
                self.cv, shuffle=True, random_state=self.random_state)
            options: dict[str, Any] = {"cv": splitter}
        else:
            options = {"cv": self.cv, "shuffle": True, "random_state": self.random_state}
        return TargetEncoder(target_type=kind, smooth=self.smooth, **options)

    def fit(self, x: pd.DataFrame, y: Any = None) -> CategoryEncodings:
        """Fit on the training rows (see :meth:`fit_transform` for their own values)."""
        self.fit_transform(x, y)
        return self

    def fit_transform(self, x: pd.DataFrame, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit on ``x`` (the fold's training rows) and encode them, target encoding
        cross-fitted within these rows.

        Raises:
            ValueError: target encoding without ``y``.
        """
        values = _values(pd.DataFrame(x))
        self._fit_counts(values)
        parts: list[np.ndarray] = []
        self.target_encoders_: list[TargetEncoder] = []
        if "target" in self.encodings:
            if y is None:
                raise ValueError("target encoding needs the training rows' targets")
            targets = self._targets(y)
            self.n_targets_ = len(targets)
            self.target_encoders_ = [self._target_encoder(target) for target in targets]
            for enc, target in zip(self.target_encoders_, targets, strict=True):
                parts.append(_cross_fitted(enc, values, target))
        return self._assemble(values, parts)

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        """Encode other rows (validation, test) with what the training rows taught."""
        values = _values(pd.DataFrame(x))
        return self._assemble(values, [enc.transform(values) for enc in self.target_encoders_])

    def names_out(self, columns: list[str]) -> list[str]:
        """The output columns' names (``color:count``, ``color:target``, multiclass
        ``color:target_2``; with several labels or targets a ``#j`` per encoder)."""
        names: list[str] = []
        for name in self.encodings:
            if name != "target":
                names += [f"{c}:{name}" for c in columns]
                continue
            for j, enc in enumerate(self.target_encoders_):
                tag = f"#{j}" if len(self.target_encoders_) > 1 else ""
                if enc.target_type_ == "multiclass":  # feature-major, as TargetEncoder writes
                    names += [f"{c}:target_{k}{tag}" for c in columns for k in enc.classes_]
                else:
                    names += [f"{c}:target{tag}" for c in columns]
        return names

    def _assemble(self, values: pd.DataFrame, target_parts: list[np.ndarray]) -> np.ndarray:
        parts: list[np.ndarray] = []
        for name in self.encodings:
            if name == "target":
                parts += target_parts
            else:
                parts.append(self._counts(values, share=name == "frequency"))
        return (np.concatenate(parts, axis=1).astype(np.float64) if parts
                else np.zeros((len(values), 0)))
