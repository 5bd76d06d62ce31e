"""The feature frame a LightGBM, XGBoost or CatBoost member reads, fitted on a fold's training
rows; and which categorical columns reach LightGBM and XGBoost as encodings instead of native
codes (``model.tabular.high_cardinality``).

A column of many levels (thousands of merchants, shops, devices) given to LightGBM or XGBoost
as native categorical codes lets each split pick any subset of its levels: the trees fit the
training rows' noise level by level, and early stopping keeps thousands of trees that score
worse held out than one number per level would. Measured on tables whose high-cardinality
columns carried strong, weak and no signal (binary, regression, multiclass;
docs/benchmarks.md, "High-cardinality categories for GBDT members"), replacing the codes of
columns over ``HIGH_CARDINALITY`` (:mod:`pipeline.data.encodings`) levels by target + count
encodings (the target encoding cross-fitted within the training rows) was the better default;
the column's codes beside the encodings were not (the splits on them still overfit).
CatBoost is left alone: its ordered target statistics are this encoding done its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.data.encodings import CategoryEncodings
from pipeline.data.tabular import category_codes, normalise_categories, numbers_as_floats
from pipeline.data.text_features import TfidfColumns

UNKNOWN = "__unknown__"  # CatBoost's one category for unseen and missing values
HIGH_ENCODINGS = ("target", "count")  # what a high-cardinality column becomes
ENCODES_HIGH = ("lightgbm", "xgboost")  # the libraries whose native codes it replaces


def high_cardinality_encoder(library: str, above: int | str, encodings: tuple[str, ...],
                             task: str, cv: int, smooth: float | str, seed: int
                             ) -> tuple[int | None, CategoryEncodings | None]:
    """``TreeFeatures``' ``high_above`` and ``high`` for a member of ``library``: the level
    count above which a column loses its native codes (None: never), and the encoder of the
    encodings those columns get that ``encodings`` (given to every column) does not."""
    if library not in ENCODES_HIGH or above == "native":
        return None, None
    missing = tuple(e for e in HIGH_ENCODINGS if e not in encodings)
    return int(above), (CategoryEncodings(missing, task, cv, smooth, seed) if missing else None)


@dataclass
class TreeFeatures:
    """The feature frame every library reads, fitted on a fold's training rows: numbers as
    floats (NaN kept: the trees route it), categories with the training rows' vocabulary
    (as the MLP's: values normalised to strings; unseen and missing values are one
    'unknown'), then the ``model.tabular`` encodings of the categories as numbers (target
    encoding cross-fitted on the training rows, :mod:`pipeline.data.encodings`), then those
    of the high-cardinality columns (more than ``high_above`` training levels), which lose
    their codes, then the ``texts`` columns' TF-IDF directions (``text``,
    :mod:`pipeline.data.text_features`). Columns are renamed ``f0..`` since the libraries
    refuse some characters."""

    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    encodings: CategoryEncodings | None = None
    encoded: list[str] = field(default_factory=list)  # names of the encodings' columns
    # class-level defaults, so features pickled before text features load as without them
    texts: tuple[str, ...] = ()
    text: TfidfColumns | None = None
    # and so features pickled before the high-cardinality rule keep every column's codes
    high_above: int | None = None  # None: every categorical column keeps its codes
    high: CategoryEncodings | None = None  # the high-cardinality columns' own encodings
    native: tuple[str, ...] | None = None  # fitted: the columns kept as codes (None: all)

    @property
    def native_columns(self) -> list[str]:
        """The categorical columns given as codes (the others, as encodings only)."""
        return list(self.categorical if self.native is None else self.native)

    @property
    def high_columns(self) -> list[str]:
        """The categorical columns over ``high_above`` training levels (no codes)."""
        return [c for c in self.categorical if c not in self.native_columns]

    @property
    def columns(self) -> list[str]:
        """The original names (encodings: ``column:kind``), in the frame's column order."""
        texts = self.text.names_ if self.text is not None and self.texts else []
        return [*self.numeric, *self.native_columns, *self.encoded, *texts]

    def fit(self, frame: pd.DataFrame, y: np.ndarray | None = None) -> TreeFeatures:
        """Learn each categorical column's vocabulary (and the encodings) from ``frame``."""
        self.fit_transform(frame, y, "lightgbm")
        return self

    def fit_transform(self, frame: pd.DataFrame, y: np.ndarray | None,
                      library: str) -> pd.DataFrame:
        """Fit on the training rows ``frame`` (targets ``y``, for a target encoding) and
        return their input frame, target-encoded out of fold within these rows."""
        cats = normalise_categories(frame[self.categorical])
        self.categories = {c: sorted(cats[c].dropna().unique().tolist()) for c in cats}
        above = self.high_above
        self.native = tuple(c for c in self.categorical
                            if above is None or len(self.categories[c]) <= above)
        parts: list[np.ndarray] = []
        self.encoded = []
        if self.encodings is not None and self.categorical:
            parts.append(self.encodings.fit_transform(frame[self.categorical], y))
            self.encoded = self.encodings.names_out(self.categorical)
        high = self.high_columns
        if self.high is not None and high:  # cross-fitted too: never a row's own label
            parts.append(self.high.fit_transform(frame[high], y))
            self.encoded += self.high.names_out(high)
        words = (self.text.fit_transform(frame[list(self.texts)])
                 if self.text is not None and self.texts else None)
        return self._frame(frame, library, _joined(parts), words)

    def transform(self, frame: pd.DataFrame, library: str) -> pd.DataFrame:
        """The library's input frame: category dtype (LightGBM, XGBoost; unknown = NaN) or
        strings (CatBoost; unknown = :data:`UNKNOWN`)."""
        parts: list[np.ndarray] = []
        if self.encodings is not None and self.categorical and self.encoded:
            parts.append(self.encodings.transform(frame[self.categorical]))
        high = self.high_columns
        if self.high is not None and high:
            parts.append(self.high.transform(frame[high]))
        words = (self.text.transform(frame[list(self.texts)])
                 if self.text is not None and self.texts else None)
        return self._frame(frame, library, _joined(parts), words)

    def _frame(self, frame: pd.DataFrame, library: str, extra: np.ndarray | None,
               words: np.ndarray | None = None) -> pd.DataFrame:
        num = numbers_as_floats(frame[self.numeric])
        native = self.native_columns
        cats = normalise_categories(frame[native])
        parts = {c: num[c].to_numpy() for c in self.numeric}
        for c in native:
            known = self.categories[c]
            coded = pd.Categorical.from_codes(
                category_codes(cats[c].to_numpy(dtype=object), known), categories=known)
            if library == "catboost":  # strings; an unknown value is a category of its own
                values = np.asarray(coded.astype(object), dtype=object)
                values[pd.isna(values)] = UNKNOWN
                parts[c] = values
            else:
                parts[c] = coded
        for j, name in enumerate(self.encoded):
            parts[name] = extra[:, j] if extra is not None else np.nan
        if words is not None and self.text is not None:
            parts |= {name: words[:, j] for j, name in enumerate(self.text.names_)}
        out = pd.DataFrame(parts, index=frame.index)
        out.columns = [f"f{i}" for i in range(len(out.columns))]
        return out

    def categorical_names(self) -> list[str]:
        """The renamed categorical columns (CatBoost's ``cat_features``)."""
        start = len(self.numeric)
        return [f"f{i}" for i in range(start, start + len(self.native_columns))]


def _joined(parts: list[np.ndarray]) -> np.ndarray | None:
    """The encodings' columns side by side (None: no encoding)."""
    return np.concatenate(parts, axis=1) if parts else None
