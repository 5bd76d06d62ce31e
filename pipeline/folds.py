"""Folds stage: seeded splitters -> ``folds/<name>.csv`` (id, fold), shared by every model,
with ``folds/<name>.json`` recording what shaped it (scheme, seed, target, group column)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import write_csv, write_json
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.copy_groups import split_copies
from pipeline.data.later_test import later_test_warning
from pipeline.data.repeated_rows import repeated_rows_warning
from pipeline.data.splits import (
    SPLITTERS,
    check_spec,
    constant_labels_warning,
    folds_spec,
    make_folds,
    predicting_folds,
    read_folds,
    spec_path,
)
from pipeline.data.time_folds import (
    check_time_blocks,
    competition_times,
    shared_period_warning,
    time_folds_summary,
    training_rows,
)
from pipeline.errors import DataError

log = logging.getLogger(__name__)


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> Path:
    """Write the folds file unless a valid one exists; return its path."""
    comp = comp or load_competition(cfg.competition)
    path = cfg.folds_file
    spec = folds_spec(comp, cfg.folds)
    splitter = SPLITTERS.get(cfg.folds.scheme)
    if path.is_file():
        made = check_spec(path, spec)
        kept = read_folds(path, comp, cfg.folds.n_splits)
        # an adversarial validation fold ('made_by') holds the most test-like rows, by design
        # no block of time
        if splitter.uses_time and "made_by" not in made:
            check_time_blocks(path, comp, kept)
        if "made_by" in made and cfg.folds.gap:  # it purged near every row of the fold's
            # neighbours in time: the test-like rows are scattered over the whole period
            raise DataError(f"'folds.gap' {cfg.folds.gap:g} purges the rows beside a block of "
                            f"time, but {path} holds folds made by {made['made_by']} (a "
                            "test-like validation fold, no block of time): set 'folds.gap: 0'")
        _check_gap(cfg, comp, kept)
        # written by hand, or before the train file gained copies of its rows (an
        # adversarial validation fold picks the test-like rows, copies or not)
        if (cfg.folds.copies == "together" and "made_by" not in made
                and (split := split_copies(comp, kept))):
            raise DataError(f"folds file {path}: {split} train rows have a copy of their "
                            "inputs in another fold, but 'folds.copies' is 'together'. Delete "
                            f"it (and {spec_path(path).name}) to rebuild it")
        log.debug("folds: %s exists and matches the train ids; kept", path)
        return path
    folds = make_folds(comp, cfg.folds)
    _check_gap(cfg, comp, folds)
    write_json(spec_path(path), spec)  # first: a CSV never exists without its spec
    write_csv(path, pd.DataFrame({cfg.competition.id_column: comp.train[cfg.competition.id_column],
                                  "fold": folds}))
    sizes = np.bincount(folds).tolist()
    log.info("folds: wrote %s (%s, %d folds, sizes %s)", path, cfg.folds.scheme,
             cfg.folds.n_splits, sizes)
    if splitter.uses_time:  # which period each fold validates
        log.info("folds: by time in column %r: %s; the test rows are predicted by the models "
                 "of fold(s) %s (fold %d's never trains on the latest block)",
                 cfg.competition.time_column, time_folds_summary(competition_times(comp), folds),
                 ", ".join(map(str, predicting_folds(cfg.folds.scheme, cfg.folds.n_splits))),
                 cfg.folds.n_splits - 1)
    # said once, when the folds are made: every later stage reads these folds
    groups = splitter.uses_groups
    # copies kept together split none: the warning would read every input (each image
    # file) a second time to say nothing
    repeats = (repeated_rows_warning(comp, folds, groups) if cfg.folds.copies != "together"
               else None)
    for warning in (repeats,
                    later_test_warning(comp, groups or splitter.uses_time),
                    shared_period_warning(comp), constant_labels_warning(comp)):
        if warning:
            log.warning("%s", warning)
    return path


def _check_gap(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray) -> None:
    """A 'folds.gap' that leaves some fold nothing to train on is refused here, before any
    fold trains, not when that fold's turn comes."""
    if cfg.folds.gap:
        for fold in range(cfg.folds.n_splits):
            training_rows(comp, folds, fold, cfg.folds.gap)
