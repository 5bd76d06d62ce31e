"""Rows as text: a table row written out as ``"column: value; column: value"`` so a
transformers encoder reads it like any sentence (the T5 lesson: turn structured data into
text, and one pretrained model reads it). The encoder kind is ``rows_text:<local dir>``
(:mod:`pipeline.models.encoders`); the dataset tokenises these strings in place of text
columns, through the same cache (:func:`pipeline.data.datasets.encode_texts`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MISSING = "missing"  # a word the tokenizer knows, not "nan" (a rare subword split)


def format_value(value: object) -> str:
    """One cell, compact: integers without ``.0``, floats to 4 significant digits, missing
    values as :data:`MISSING`, anything else as its string."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return MISSING
    if value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else (
            f"{number:.4g}")
    return str(value).strip()


def _column_strings(col: pd.Series) -> list[str]:
    if pd.api.types.is_float_dtype(col):  # the common case, vectorised
        values = col.to_numpy(dtype=np.float64)
        whole = np.isfinite(values) & (np.mod(values, 1) == 0) & (np.abs(values) < 1e15)
        return [MISSING if np.isnan(v) else str(int(v)) if w else f"{v:.4g}"
                for v, w in zip(values, whole, strict=True)]
    return [format_value(v) for v in col.tolist()]


def row_texts(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Each row of ``frame`` as ``"column: value; ..."`` over ``columns``, in their order."""
    parts = [[f"{name}: {s}" for s in _column_strings(frame[name])] for name in columns]
    return ["; ".join(cells) for cells in zip(*parts, strict=True)] if parts else (
        [""] * len(frame))
