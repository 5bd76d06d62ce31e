"""Full fit (``train.full_fit``): after a seed's folds, one more model of that seed trained on
every train row, for the length its folds chose, predicts the test rows
(:mod:`pipeline.full_fit_predictions` combines them with the fold models' mean).

The length, read from the folds' records (``metrics.json``):

- a network: the median over the folds of the epoch whose weights predict (the best epoch
  under ``checkpoint: best``, else the last one trained: the recipe's, or where early
  stopping ended the fold), rounded half up; the recipe's schedule runs as it did in the
  folds and stops there;
- a GBDT member: the folds' mean best iteration, times k/(k-1) (each fold trained on
  (k-1)/k of the rows), per estimator; without early stopping, the configured trees;
- a scikit-learn member: as configured (no length to choose).

The full model lives in ``seed<s>/full`` (:data:`pipeline.runs.FULL_FIT`) and records its
length; when the folds choose another (they were trained again), it is trained again.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from pipeline.artifacts import read_json, write_json
from pipeline.config import ExperimentConfig
from pipeline.errors import DataError
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES
from pipeline.models.gbdt import gbdt_settings
from pipeline.runs import FULL_FIT, RESTART_FILES, fold_dir, fold_label

log = logging.getLogger(__name__)
LENGTH_FILE = "length.json"  # the length a full model started training for


def _fold_records(cfg: ExperimentConfig, seed: int) -> list[dict[str, Any]]:
    records = []
    for fold in range(cfg.folds.n_splits):
        path = fold_dir(cfg, seed, fold) / "metrics.json"
        if not path.is_file():
            raise DataError(f"{path} is missing: seed {seed}'s full model takes its length "
                            "from every fold; run the train stage")
        records.append(read_json(path))
    return records


def network_epochs(records: list[dict[str, Any]], checkpoint: str) -> int:
    """The median over the folds' records of the epoch whose weights predict, rounded half
    up (at least 1).

    >>> network_epochs([{"best_epoch": 3}, {"best_epoch": 4}], "best")
    4
    """
    chosen = [r["best_epoch"] if checkpoint == "best"
              else len([e for e in r["epochs"] if not e.get("swa")]) for r in records]
    return max(1, math.floor(float(np.median(chosen)) + 0.5))


def gbdt_trees(records: list[dict[str, Any]], n_splits: int,
               early_stopped: bool = True) -> list[int]:
    """Per estimator, the folds' mean best iteration times k/(k-1), rounded (at least 1); a
    fold whose estimator kept no trees (a class absent from its rows) is left out of the mean.
    Not ``early_stopped`` (``early_stopping_rounds: 0``): the folds chose no length, every
    fold kept the configured trees, and so does the full model (unscaled).

    >>> gbdt_trees([{"best_iteration": 90}, {"best_iteration": 110}], 5)
    [125]
    """
    kept = [r["best_iteration"] if isinstance(r["best_iteration"], list)
            else [r["best_iteration"]] for r in records]
    scale = n_splits / (n_splits - 1) if early_stopped else 1.0
    trees = []
    for per_fold in zip(*kept, strict=True):
        fitted = [t for t in per_fold if t]
        # no fold fitted it: every fold saw one class, and so does the full model (no trees)
        trees.append(max(1, round(float(np.mean(fitted)) * scale)) if fitted else 0)
    return trees


def full_fit_length(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """The length seed ``seed``'s full model trains for, from its folds' records:
    ``{"epochs": E}`` (network), ``{"trees": [...]}`` (GBDT), ``{}`` (scikit-learn)."""
    if cfg.model.is_sklearn and cfg.model.encoders[0].kind not in GBDT_LIBRARIES:
        return {}
    records = _fold_records(cfg, seed)
    encoder = cfg.model.encoders[0]
    if encoder.kind in GBDT_LIBRARIES:
        rounds = gbdt_settings(encoder.kind, encoder.params).early_stopping_rounds
        return {"trees": gbdt_trees(records, cfg.folds.n_splits, early_stopped=rounds > 0)}
    return {"epochs": network_epochs(records, cfg.train.predicting_epoch)}


def start_full_fit(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """Before seed ``seed``'s full model trains or is kept: its length now; a model (or a
    resume point) made for another length is dropped, so it trains again from the start."""
    length = full_fit_length(cfg, seed)
    folder = fold_dir(cfg, seed, FULL_FIT)
    path = folder / LENGTH_FILE
    try:
        recorded = read_json(path) if path.is_file() else None
    except ValueError:  # damaged: nothing vouches for what is there
        recorded = {"length": None}
    if recorded is not None and recorded.get("length") != length:
        log.warning("%s: its folds now choose %s (it was made for %s); it is trained again",
                    fold_label(cfg, seed, FULL_FIT), length, recorded.get("length"))
        for name in ("metrics.json", "predictions.json", *RESTART_FILES, "model.joblib"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"length": length})
    said = {"epochs": "epoch(s), the folds' median chosen epoch (each epoch's score is of its "
                      "own rows)",
            "trees": "tree(s) per estimator, the folds' mean best iteration x k/(k-1)"}
    for key, value in length.items():
        log.info("%s: %s %s", fold_label(cfg, seed, FULL_FIT), value, said[key])
    return length


def length_current(cfg: ExperimentConfig, seed: int) -> bool:
    """Whether seed ``seed``'s full model was made for the length its folds choose now
    (read only: the predict stage refuses one that is not)."""
    path = fold_dir(cfg, seed, FULL_FIT) / "metrics.json"
    try:
        return path.is_file() and read_json(path).get("length") == full_fit_length(cfg, seed)
    except ValueError:
        return False
