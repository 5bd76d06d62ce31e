"""What a fold fits on its own training rows before training (the tabular encoder, the
regression target scale), kept in ``preprocess.json`` so that prediction rebuilds the same
inputs, and the fold's training datasets (with pseudo-labelled rows when configured)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import read_json, write_json
from pipeline.competition import Competition, to_predictions
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import CombinedDataset, CompetitionDataset, ModelInputs
from pipeline.data.tabular import TabularEncoder

PREP_FILE = "preprocess.json"


@dataclass(frozen=True)
class FoldPrep:
    """The preprocessing a fold fitted on its training rows."""

    tabular: TabularEncoder
    target_mean: list[float]  # regression targets are standardised per fold (identity else)
    target_std: list[float]

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``preprocess.json``."""
        return {"tabular": self.tabular.state_dict(), "target_mean": self.target_mean,
                "target_std": self.target_std}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldPrep:
        """Inverse of :meth:`to_json`."""
        return cls(TabularEncoder.from_state_dict(data["tabular"]), data["target_mean"],
                   data["target_std"])

    def standardise(self, task: str, y: np.ndarray) -> np.ndarray:
        """Encoded targets as the network trains on them (regression: standardised)."""
        if task == "regression":
            y = (y - np.array(self.target_mean)) / np.array(self.target_std)
        return y.astype(np.int64 if task == "multiclass" else np.float32)

    def predictions(self, task: str, outputs: np.ndarray) -> np.ndarray:
        """Network outputs -> artifact predictions (probabilities or regression values)."""
        return to_predictions(task, outputs, self.target_mean, self.target_std)


def _fit_prep(comp: Competition, rows: np.ndarray) -> FoldPrep:
    tab = TabularEncoder(comp.numeric_columns, comp.categorical_columns)
    tab.fit(comp.train.iloc[rows])
    k = comp.n_outputs
    if comp.cfg.task != "regression":
        return FoldPrep(tab, [0.0] * k, [1.0] * k)
    y = comp.targets[rows]
    return FoldPrep(tab, y.mean(axis=0).tolist(), (y.std(axis=0) + 1e-12).tolist())


def fold_prep(fold_dir: Path, comp: Competition | None = None,
              rows: np.ndarray | None = None) -> FoldPrep:
    """The fold's preprocessing: read from ``preprocess.json``, or fitted on ``rows`` of
    ``comp`` and written there first. Always read back from the file, so a fresh fold and a
    resumed one see the same (JSON round-tripped) values."""
    path = fold_dir / PREP_FILE
    if not path.is_file():
        if comp is None or rows is None:
            raise FileNotFoundError(f"{path} not found: train the fold first")
        write_json(path, _fit_prep(comp, rows).to_json())
    return FoldPrep.from_json(read_json(path))


def with_pseudo_rows(
    comp: Competition, pseudo: pd.DataFrame, inputs: ModelInputs, y_train: np.ndarray,
    train_rows: np.ndarray, prep: FoldPrep, augment: AugmentConfig | None,
) -> CombinedDataset:
    """The fold's training rows plus its pseudo-labelled test rows (with their weight).

    Multiclass labels become one-hot rows so hard and soft pseudo-labels share a layout.
    """
    ccfg = comp.cfg
    id_col, cols = ccfg.id_column, comp.pred_columns
    by_id = comp.test.set_index(comp.test[id_col].astype(str))
    rows = by_id.loc[pseudo[id_col].astype(str)].reset_index(drop=True)
    labels = pseudo[cols].to_numpy(dtype=np.float32)
    if ccfg.task == "regression":
        labels = ((labels - np.array(prep.target_mean)) / np.array(prep.target_std))
    if ccfg.task == "multiclass":
        y_train = np.eye(len(comp.classes), dtype=np.float32)[y_train]
    real = CompetitionDataset(comp.train.iloc[train_rows], inputs, y_train, augment,
                              np.ones(len(train_rows), dtype=np.float32))
    extra = CompetitionDataset(rows, inputs, labels.astype(np.float32), augment,
                               pseudo["weight"].to_numpy(dtype=np.float32))
    return CombinedDataset([real, extra])
