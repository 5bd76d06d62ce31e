"""A run's predictions of the train rows kept without a target
('competition.unlabelled_train_rows: unlabelled'), gathered like its test predictions.

Each fold predicts those rows as it predicts the test rows (every checkpoint, every TTA
transform) into its ``unlabelled.parquet``; gathering stacks them into the run's
``unlabelled_folds.parquet`` (seed, fold, id, predictions), so that a later round's pseudo
stage labels them with the source's fold-k models for fold k, exactly as it labels the test
rows from ``test_folds.parquet``. A run without such rows (or whose folds were predicted by an
older release, without the file) has no ``unlabelled_folds.parquet``: a stale one is removed,
never left to label rows of another train file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.artifacts import read_fold_rows, write_parquet
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig

log = logging.getLogger(__name__)
UNLABELLED_FOLDS = "unlabelled_folds.parquet"  # in the run folder: every fold model's


def gather_unlabelled(cfg: ExperimentConfig, comp: Competition,
                      fold_dir: Callable[[ExperimentConfig, int, int], Path]) -> None:
    """Write ``<run>/unlabelled_folds.parquet`` from every (seed, fold)'s
    ``unlabelled.parquet`` (in ``fold_dir(cfg, seed, fold)``); remove it where the run has no
    unlabelled rows or a fold lacks their predictions."""
    target = cfg.run_dir / UNLABELLED_FOLDS
    if comp.unlabelled is None:
        target.unlink(missing_ok=True)
        return
    id_col = cfg.competition.id_column
    ids = comp.unlabelled[id_col].astype(str).to_numpy()
    parts = []
    for seed, fold in ((s, f) for s in cfg.train.seeds for f in range(cfg.folds.n_splits)):
        folder = fold_dir(cfg, seed, fold)
        path = folder / "unlabelled.parquet"
        if not path.is_file():  # predicted by a release that did not predict these rows
            log.warning("%s: %s has no predictions of the %d train rows without a target; "
                        "a later round cannot pseudo-label them from this run (train it "
                        "again with --overwrite)", cfg.name, folder, len(ids))
            target.unlink(missing_ok=True)
            return
        parts.append(read_fold_rows(path, id_col, ids, seed, fold, "the train rows without a "
                                    f"target of {cfg.competition.train_file}"))
    write_parquet(target, pd.concat(parts, ignore_index=True))
