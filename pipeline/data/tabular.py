"""Tabular inputs of a network: numeric scaling and category vocabularies fitted per fold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class TabularEncoder:
    """Numeric scaling and category vocabularies, fitted on the training rows of a fold.

    Numbers: median fill, standardisation, and a missing-value indicator for each column with
    NaN in training. Categories: index 0 is unseen or missing, 1.. the training values.
    """

    numeric: list[str]
    categorical: list[str]
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    nan_columns: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn fills, scales and vocabularies from ``frame``."""
        for col in self.numeric:
            values = pd.to_numeric(frame[col], errors="coerce").astype(float)
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            self.medians[col] = median
            self.means[col] = float(filled.mean())
            self.stds[col] = float(filled.std(ddof=0)) or 1.0
            if values.isna().any():
                self.nan_columns.append(col)
        for col in self.categorical:
            self.vocab[col] = sorted(frame[col].dropna().astype(str).unique().tolist())
        return self

    @property
    def n_numeric(self) -> int:
        """Width of the ``num`` input."""
        return len(self.numeric) + len(self.nan_columns)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes of the ``cat`` input (unknown index included)."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def transform(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """``num`` (float32) and ``cat`` (int64) arrays for ``frame``."""
        num = [
            (pd.to_numeric(frame[c], errors="coerce").astype(float).fillna(self.medians[c])
             - self.means[c]) / self.stds[c]
            for c in self.numeric
        ]
        num += [frame[c].isna().astype(float) for c in self.nan_columns]
        cat = []
        for col in self.categorical:
            index = {v: i + 1 for i, v in enumerate(self.vocab[col])}
            cat.append(frame[col].astype(str).map(index).fillna(0).astype(np.int64))
        n = len(frame)
        return {
            "num": (np.stack(num, axis=1).astype(np.float32) if num
                    else np.zeros((n, 0), np.float32)),
            "cat": np.stack(cat, axis=1).astype(np.int64) if cat else np.zeros((n, 0), np.int64),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints."""
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularEncoder:
        """Inverse of :meth:`state_dict`."""
        return cls(**state)
