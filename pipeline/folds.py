"""Folds stage: seeded splitters -> ``folds/<name>.csv`` (id, fold), shared by every model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import (
    BaseCrossValidator,
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)

from pipeline.artifacts import write_csv
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig, FoldsConfig
from pipeline.errors import DataError
from pipeline.registry import Registry

log = logging.getLogger(__name__)

SPLITTERS: Registry[type[BaseCrossValidator]] = Registry("fold scheme")
SPLITTERS.add("kfold", KFold, "shuffled KFold")
SPLITTERS.add("stratified", StratifiedKFold, "class proportions kept (regression: quantile bins)")
SPLITTERS.add("group", GroupKFold, "a group never spans two folds")
SPLITTERS.add("stratified_group", StratifiedGroupKFold, "groups kept whole, classes balanced")
SPLITTERS.add("multilabel", MultilabelStratifiedKFold, "iterative multilabel stratification")

REGRESSION_BINS = 10


def _strata(comp: Competition) -> np.ndarray:
    """What stratification balances: the class, or a quantile bin of a regression target."""
    cfg = comp.cfg
    if cfg.task == "multilabel":
        return comp.targets.astype(int)
    if cfg.task == "regression":
        values = comp.train[cfg.target_columns[0]]
        return pd.qcut(values, q=REGRESSION_BINS, labels=False, duplicates="drop").to_numpy()
    return comp.train[cfg.target_columns[0]].astype(str).to_numpy()


def _check_class_counts(strata: np.ndarray, n_splits: int, column: str, path: Path) -> None:
    values, counts = np.unique(strata, return_counts=True)
    small = [(v, c) for v, c in zip(values, counts, strict=True) if c < n_splits]
    if small:
        shown = ", ".join(f"{v!r} ({c} rows)" for v, c in small[:5])
        raise DataError(
            f"{path}: column {column!r} has {len(small)} class(es) with fewer rows than "
            f"'folds.n_splits'={n_splits}: {shown}. Lower n_splits or use scheme 'kfold'."
        )


def make_folds(comp: Competition, cfg: FoldsConfig) -> np.ndarray:
    """Fold id of every train row (train.csv order)."""
    ccfg = comp.cfg
    n = len(comp.train)
    train_path = Path(ccfg.dir) / ccfg.train_file
    if n < cfg.n_splits:
        raise DataError(f"{train_path}: {n} rows cannot make {cfg.n_splits} folds")
    groups = comp.train[ccfg.group_column].to_numpy() if ccfg.group_column else None
    strata = _strata(comp)
    stratified = cfg.scheme in ("stratified", "stratified_group")
    if stratified and ccfg.task in ("binary", "multiclass"):
        _check_class_counts(strata, cfg.n_splits, ccfg.target_columns[0], train_path)
    if groups is not None and cfg.scheme in ("group", "stratified_group"):
        n_groups = len(pd.unique(groups))
        if n_groups < cfg.n_splits:
            raise DataError(
                f"{train_path}: column {ccfg.group_column!r} has {n_groups} groups, fewer than "
                f"'folds.n_splits'={cfg.n_splits}"
            )
    splitter_cls = SPLITTERS.get(cfg.scheme)
    splitter = splitter_cls(n_splits=cfg.n_splits, shuffle=True, random_state=cfg.seed)
    folds = np.full(n, -1, dtype=np.int64)
    x = np.zeros((n, 1))
    for k, (_, valid) in enumerate(splitter.split(x, strata, groups)):
        folds[valid] = k
    assert (folds >= 0).all(), "splitter left rows without a fold"
    return folds


def read_folds(path: Path, comp: Competition, n_splits: int | None = None) -> np.ndarray:
    """Fold ids aligned with train.csv rows; errors if the file was built for other ids."""
    id_col = comp.cfg.id_column
    frame = pd.read_csv(path)
    if list(frame.columns) != [id_col, "fold"]:
        raise DataError(
            f"folds file {path} must have columns [{id_col!r}, 'fold']. Got {list(frame.columns)}."
        )
    dup = frame[id_col][frame[id_col].duplicated()]
    if len(dup):
        raise DataError(
            f"folds file {path} has {len(dup)} duplicate id(s), e.g. {dup.iloc[:3].tolist()}"
        )
    fold = frame["fold"]
    if not pd.api.types.is_integer_dtype(fold) or (len(fold) and fold.min() < 0) or (
        n_splits is not None and sorted(fold.unique()) != list(range(n_splits))
    ):
        raise DataError(
            f"folds file {path}: column 'fold' must hold the integers 0..{(n_splits or 0) - 1}"
            f" ('folds.n_splits'={n_splits}). Got {sorted(map(str, fold.unique()))[:10]}."
        )
    by_id = dict(zip(frame[id_col].astype(str), frame["fold"], strict=True))
    train_ids = comp.train[id_col].astype(str)
    missing = [i for i in train_ids if i not in by_id]
    extra = len(by_id) - (len(train_ids) - len(missing))
    if missing or extra:
        raise DataError(
            f"folds file {path} was built for other ids: {len(missing)} train id(s) missing "
            f"(e.g. {missing[:3]}), {extra} id(s) not in train. Delete it to rebuild, or set "
            "'folds.name' to a new file."
        )
    return np.array([by_id[i] for i in train_ids], dtype=np.int64)


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> Path:
    """Write the folds file unless a valid one exists; return its path."""
    comp = comp or load_competition(cfg.competition)
    path = cfg.folds_file
    if path.is_file():
        read_folds(path, comp, cfg.folds.n_splits)
        log.debug("folds: %s exists and matches the train ids; kept", path)
        return path
    folds = make_folds(comp, cfg.folds)
    write_csv(path, pd.DataFrame({cfg.competition.id_column: comp.train[cfg.competition.id_column],
                                  "fold": folds}))
    sizes = np.bincount(folds).tolist()
    log.info("folds: wrote %s (%s, %d folds, sizes %s)", path, cfg.folds.scheme,
             cfg.folds.n_splits, sizes)
    return path
