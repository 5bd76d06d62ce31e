"""Tabular columns as model inputs, one encoding for every model: scikit-learn's
``ColumnTransformer`` fitted on a fold's training rows.

Numbers: coerced to floats, median fill, standardisation (for networks) and a missing-value
indicator per column with NaN in training. Categories: values normalised to one string per
value first (an integer-coded column read as floats in one file, ``3.0``, and as integers in
the other, ``3``, is one category), then ordinal codes; unseen and missing values share the
code 0 (-1 for scikit-learn models, whose trees take it as its own branch). Scikit-learn
models may take one-hot columns instead, and target/count/frequency encodings beside them
(:mod:`pipeline.data.encodings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from pipeline.data.encodings import CategoryEncodings, normalise_categories

UNSEEN_WARN_SHARE = 0.05  # more unseen test categories than this is worth a warning


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(pd.to_numeric, errors="coerce").astype(np.float64)


def column_encoder(numeric: list[str], categorical: list[str], *, scale: bool, impute: bool,
                   indicators: bool, encodings: CategoryEncodings | None = None,
                   onehot: bool = False) -> ColumnTransformer:
    """The column encoding every model shares: numbers (filled, scaled and flagged as asked)
    then ordinal category codes (-1: unseen or missing; ``onehot``: one-hot columns), then
    the ``encodings`` of the categorical columns when given (target encoding cross-fitted:
    a ``ColumnTransformer`` hands its ``fit_transform`` the training targets)."""
    steps: list[tuple[str, Any]] = [("numbers", FunctionTransformer(_numbers))]
    if impute:
        steps.append(("fill", SimpleImputer(strategy="median", keep_empty_features=True)))
    if scale:
        steps.append(("scale", StandardScaler()))
    parts: list[tuple[str, Any, list[str]]] = [("num", Pipeline(steps), numeric)]
    if indicators:
        parts.append(("missing", Pipeline([
            ("numbers", FunctionTransformer(_numbers)),
            ("flag", MissingIndicator(features="missing-only", error_on_new=False)),
        ]), numeric))
    codes: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                encoded_missing_value=-1, dtype=np.float64)
    if onehot:  # unseen values: all zeros; missing: a column of its own
        codes = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
    parts.append(("cat", Pipeline([
        ("normalise", FunctionTransformer(normalise_categories)),
        ("codes", codes),
    ]), categorical))
    if encodings is not None and encodings.encodings:
        parts.append(("encoded", encodings, categorical))
    return ColumnTransformer([p for p in parts if p[2]], sparse_threshold=0.0)


@dataclass
class TabularEncoder:
    """A network's tabular inputs, fitted on the training rows of a fold: ``num`` (scaled
    numbers, then missing-value flags) and ``cat`` (codes 1.. for training categories, 0 for
    unseen or missing ones), one embedding table per categorical column."""

    numeric: list[str]
    categorical: list[str]
    encoder: ColumnTransformer | None = None
    n_numeric: int = 0  # width of the ``num`` input
    cardinalities: list[int] = field(default_factory=list)  # embedding table sizes

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn fills, scales and category codes from ``frame``."""
        if not self.numeric and not self.categorical:
            return self
        self.encoder = column_encoder(self.numeric, self.categorical, scale=True, impute=True,
                                      indicators=True)
        out = self.encoder.fit_transform(frame[[*self.numeric, *self.categorical]])
        self.n_numeric = out.shape[1] - len(self.categorical)
        if self.categorical:
            codes = self.encoder.named_transformers_["cat"].named_steps["codes"]
            # categories_ lists a training NaN too, but missing values get code 0 with the
            # unseen ones; real categories get 1..k
            self.cardinalities = [int(pd.notna(c).sum()) + 1 for c in codes.categories_]
        return self

    def transform(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """``num`` (float32) and ``cat`` (int64) arrays for ``frame``."""
        n = len(frame)
        if not self.numeric and not self.categorical:
            return {"num": np.zeros((n, 0), np.float32), "cat": np.zeros((n, 0), np.int64)}
        if self.encoder is None:
            raise ValueError("TabularEncoder.transform before fit")
        out = self.encoder.transform(frame[[*self.numeric, *self.categorical]])
        return {"num": np.ascontiguousarray(out[:, :self.n_numeric], dtype=np.float32),
                "cat": np.ascontiguousarray(out[:, self.n_numeric:] + 1, dtype=np.int64)}


def unseen_shares(train: pd.DataFrame, test: pd.DataFrame,
                  columns: list[str]) -> dict[str, float]:
    """Per categorical column, the share of test rows whose (present) value never occurs in
    train: those rows all get the 'unknown' code, which CV does not see."""
    shares = {}
    for col in columns:
        seen = set(normalise_categories(train[[col]])[col].dropna())
        values = normalise_categories(test[[col]])[col].dropna()
        if len(values):
            shares[col] = float((~values.isin(seen)).mean())
    return shares
