"""How a run's test predictions take in its full models (``train.full_fit``): each seed's
model of every train row predicts the test rows (``seed<s>/full/test.parquet``), and the
run's ``test.parquet`` is their mean (``replace``) or the mean of that and the fold models'
mean (``average``). The OOF predictions stay the folds': a full model has no held-out rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_parquet
from pipeline.errors import DataError

COMBINES = ("replace", "average")


def full_model_tests(comp: Any, folders: dict[int, Path]) -> dict[int, np.ndarray]:
    """Each seed's full model's test predictions (rows in the test file's order), by seed,
    from ``folders`` (seed -> its full model's folder). ``comp``: the
    :class:`pipeline.competition.Competition` (typed Any: it imports the run contract)."""
    id_col, cols = comp.cfg.id_column, comp.pred_columns
    ids = comp.test[id_col].astype(str)
    tests = {}
    for seed, folder in folders.items():
        path = folder / "test.parquet"
        if not path.is_file():
            raise DataError(f"{path} is missing: run the train stage (it trains seed {seed}'s "
                            "full model)")
        frame = read_parquet(path)
        frame.index = frame[id_col].astype(str)
        if set(ids) - set(frame.index):
            raise DataError(f"{path} holds other ids than the test file: run the predict "
                            "stage again")
        tests[seed] = frame.loc[ids, cols].to_numpy(dtype=np.float64)
    return tests


def combine(fold_mean: np.ndarray, full_mean: np.ndarray, how: str) -> np.ndarray:
    """The test predictions of fold models' mean ``fold_mean`` and full models' mean
    ``full_mean`` combined ``how`` (``replace``: the full models'; ``average``: the mean of
    the two, so the folds and the full models weigh alike however many folds there are).

    >>> combine(np.array([[0.2]]), np.array([[0.4]]), "average")
    array([[0.3]])
    """
    if how not in COMBINES:
        raise ValueError(f"{how=} must be one of {COMBINES}")
    return full_mean if how == "replace" else (fold_mean + full_mean) / 2
