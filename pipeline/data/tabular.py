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

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    StandardScaler,
)

from pipeline.data.encodings import CategoryEncodings, normalise_categories
from pipeline.data.text_features import TfidfColumns

UNSEEN_WARN_SHARE = 0.05  # more unseen test categories than this is worth a warning


_TOO_LARGE = 1e150  # inf included


def numbers_as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as float64; text that is no number, and +-inf (``inf`` in a CSV, which
    scikit-learn models refuse and a scaler turns into NaN), become NaN: missing values. So
    do values past 1e150, whose squares overflow: a scaler's variance of '1e308' was inf,
    the column's values NaN, and a network's outputs NaN from its first epoch."""
    # Columns read as numbers need no parsing: a column-by-column to_numeric costs ~20 ms
    # per call on a 43,000 x 36 table, and every fold calls it several times. One array
    # copy, not astype: read_csv leaves each column a block of its own, which astype
    # converts one by one (10 ms more a call there)
    if all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN cells compare False
        infinite = np.abs(values) > _TOO_LARGE
    if infinite.any():  # (values may be a read-only view of the frame's block)
        values = np.where(infinite, np.nan, values)
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


_numbers = numbers_as_floats  # folds' tabular.joblib written before the rename name it so


class MedianFill(TransformerMixin, BaseEstimator):
    """Missing values filled with their column's training median (0 for a column with
    none): SimpleImputer(strategy="median", keep_empty_features=True)'s numbers, computed
    with ``np.nanmedian`` instead of masked arrays (about 10x faster: 130 ms -> 10 ms a fit
    on a 43,000 x 36 table, paid by every fold)."""

    def fit(self, X: Any, y: Any = None) -> MedianFill:
        values = np.asarray(X, dtype=np.float64)
        with warnings.catch_warnings():  # an all-missing column: its median is NaN, then 0
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(values, axis=0) if len(values) else np.zeros(values.shape[1])
        self.statistics_ = np.nan_to_num(medians, nan=0.0)
        self.n_features_in_ = values.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        values = np.array(X, dtype=np.float64)
        missing = np.isnan(values)
        if missing.any():
            values[missing] = np.broadcast_to(self.statistics_, values.shape)[missing]
        return values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(input_features if input_features is not None
                          else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)


class CategoryCodes(TransformerMixin, BaseEstimator):
    """Ordinal codes of normalised category values: OrdinalEncoder(handle_unknown=
    "use_encoded_value", unknown_value=-1, encoded_missing_value=-1)'s numbers (the training
    values sorted, code k for the k-th; -1 for unseen and missing), each distinct value
    looked up once instead of a Python dict lookup a cell (190 ms -> ~25 ms a transform of
    300,000 rows x 3 columns, paid for the train, validation and test rows of every fold)."""

    def fit(self, X: Any, y: Any = None) -> CategoryCodes:
        columns = _object_columns(X)
        self.categories_ = []
        for values in columns:
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            # like OrdinalEncoder's, a training NaN is listed last (it still gets -1)
            self.categories_.append(np.array(
                [*sorted(uniques), *([np.nan] if (codes < 0).any() else [])], dtype=object))
        self.n_features_in_ = len(columns)
        return self

    def transform(self, X: Any) -> np.ndarray:
        columns = _object_columns(X)
        out = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=np.float64)
        for j, (values, known) in enumerate(zip(columns, self.categories_, strict=True)):
            out[:, j] = category_codes(values, known[pd.notna(known)])
        return out


def category_codes(values: np.ndarray, known: Any) -> np.ndarray:
    """The position of each of ``values`` in ``known`` (-1: not there, or missing). The
    distinct values are looked up, then spread by their codes: a hash lookup per row of an
    object index is ~6x slower than factorizing the column."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return np.append(pd.Index(known, dtype=object).get_indexer(uniques), -1)[codes]


def _object_columns(X: Any) -> list[np.ndarray]:
    if isinstance(X, pd.DataFrame):
        return [X[c].to_numpy(dtype=object) for c in X.columns]
    values = np.asarray(X, dtype=object)
    return [values[:, j] for j in range(values.shape[1])]


def column_encoder(numeric: list[str], categorical: list[str], *, scale: bool, impute: bool,
                   indicators: bool, encodings: CategoryEncodings | None = None,
                   onehot: bool = False, sparse: bool = False, texts: Sequence[str] = (),
                   text: TfidfColumns | None = None) -> ColumnTransformer:
    """The column encoding every model shares: numbers (filled, scaled and flagged as asked),
    the TF-IDF features of the ``texts`` columns (``text``; scaled with the numbers when
    dense), then
    ordinal category codes (-1: unseen or missing; ``onehot``: one-hot columns), then
    the ``encodings`` of the categorical columns when given (target encoding cross-fitted:
    a ``ColumnTransformer`` hands its ``fit_transform`` the training targets).

    ``sparse`` (for a model that takes sparse input): one-hot columns come out as a sparse
    matrix when most cells are zeros, as scikit-learn's own default does. Dense, a column
    with a value per row (an id, a free-text code) made rows x rows floats: 80 GB at
    100,000 rows."""
    steps: list[tuple[str, Any]] = [("numbers", FunctionTransformer(numbers_as_floats))]
    if impute:
        steps.append(("fill", MedianFill()))
    if scale:
        steps.append(("scale", StandardScaler()))
    parts: list[tuple[str, Any, list[str]]] = [("num", Pipeline(steps), numeric)]
    if indicators:
        parts.append(("missing", Pipeline([
            ("numbers", FunctionTransformer(numbers_as_floats)),
            ("flag", MissingIndicator(features="missing-only", error_on_new=False)),
        ]), numeric))
    if texts and text is not None:
        # sparse TF-IDF columns stay as they are: centring would make them dense
        parts.append(("text", Pipeline([("tfidf", text), ("scale", StandardScaler())])
                      if scale and not sparse else text, list(texts)))
    codes: Any = CategoryCodes()
    if onehot:  # unseen values: all zeros; missing: a column of its own
        codes = OneHotEncoder(handle_unknown="ignore", sparse_output=sparse, dtype=np.float64)
    parts.append(("cat", Pipeline([
        ("normalise", FunctionTransformer(normalise_categories)),
        ("codes", codes),
    ]), categorical))
    if encodings is not None and encodings.encodings:
        parts.append(("encoded", encodings, categorical))
    return ColumnTransformer([p for p in parts if p[2]],
                             sparse_threshold=0.3 if sparse and (onehot or texts) else 0.0)


@dataclass
class TabularEncoder:
    """A network's tabular inputs, fitted on the training rows of a fold: ``num`` (scaled
    numbers, then missing-value flags) and ``cat`` (codes 1.. for training categories, 0 for
    unseen or missing ones), one embedding table per categorical column. ``texts``: text
    columns read as ``text``'s dense TF-IDF features, scaled, in ``num``."""

    numeric: list[str]
    categorical: list[str]
    encoder: ColumnTransformer | None = None
    n_numeric: int = 0  # width of the ``num`` input
    cardinalities: list[int] = field(default_factory=list)  # embedding table sizes
    # class-level defaults, so an encoder pickled before text features loads as without them
    texts: tuple[str, ...] = ()
    text: TfidfColumns | None = None

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn fills, scales and category codes from ``frame``."""
        if not self._columns:
            return self
        self.encoder = column_encoder(self.numeric, self.categorical, scale=True, impute=True,
                                      indicators=True, texts=self.texts, text=self.text)
        out = self.encoder.fit_transform(frame[self._columns])
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
        if not self._columns:
            return {"num": np.zeros((n, 0), np.float32), "cat": np.zeros((n, 0), np.int64)}
        if self.encoder is None:
            raise ValueError("TabularEncoder.transform before fit")
        out = self.encoder.transform(frame[self._columns])
        return {"num": np.ascontiguousarray(out[:, :self.n_numeric], dtype=np.float32),
                "cat": np.ascontiguousarray(out[:, self.n_numeric:] + 1, dtype=np.int64)}


    @property
    def _columns(self) -> list[str]:
        return [*self.numeric, *(self.texts if self.text is not None else ()), *self.categorical]


def unseen_shares(train: pd.DataFrame, test: pd.DataFrame,
                  columns: list[str]) -> dict[str, float]:
    """Per categorical column, the share of test rows whose (present) value never occurs in
    train: those rows all get the 'unknown' code, which CV does not see."""
    shares = {}
    for col in columns:
        seen = normalise_categories(train[[col]])[col].dropna().unique()  # no per-row set
        values = normalise_categories(test[[col]])[col].dropna()
        if len(values):
            shares[col] = float((~values.isin(seen)).mean())
    return shares
