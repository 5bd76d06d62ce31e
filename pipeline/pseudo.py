"""Pseudo stage: confident predictions of an earlier run on the test rows (and on the train
rows kept without a target, 'competition.unlabelled_train_rows: unlabelled') -> labelled rows
per fold.

Leak-free by construction: the pseudo-labels for fold k come only from the source run's
fold-k models (averaged over its seeds). Those models trained without fold k's rows, so the
fold-k model of this run never learns fold k's validation labels through its pseudo rows,
and its OOF score stays honest; chaining rounds (each run the source of the next) keeps
that property. A source without per-fold test predictions (a blend) would feed every
fold's labels into every fold: it is refused unless ``pseudo.allow_leak`` is set.

The train rows without a target are labelled the same way, from the source's fold-k
predictions of them (``unlabelled_folds.parquet``, :mod:`pipeline.run_unlabelled`), and
selected together with the test rows (one threshold, top fraction and balance over both).
A source without those predictions (a blend, or a run trained under 'drop') labels the test
rows only, with a warning.

Writes ``<run>/pseudo/fold<k>.parquet``: id, ``part`` (``test`` or ``unlabelled``: a train
row and a test row may share an id), one column per prediction column (the label: one-hot /
0-1 / value for hard labels, probabilities for soft ones), ``weight`` and ``source_fold``
(the fold whose models made the label; -1 when leaky).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import RunMeta, read_meta, write_json, write_parquet
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.pseudo_labels import select
from pipeline.data_files import check_test_file
from pipeline.errors import ConfigError, DataError
from pipeline.run_unlabelled import UNLABELLED_FOLDS
from pipeline.runs import pseudo_path

log = logging.getLogger(__name__)


def source_leaky(cfg: ExperimentConfig) -> bool:
    """Whether the pseudo-labels of ``cfg`` leak validation labels: the source has no
    per-fold test predictions (a blend), or was itself trained with leaky pseudo-labels (the
    leak carries over rounds). A leaky source is refused unless ``pseudo.allow_leak``."""
    assert cfg.pseudo is not None
    source = Path(cfg.pseudo.source)
    meta = read_meta(source)
    if not (source / "test_folds.parquet").is_file():
        why = ("has no per-fold test predictions (a blend?): its labels come from models that "
               "saw every fold")
    elif meta.leaky:
        why = ("was trained with leaky pseudo-labels ('pseudo.allow_leak'): its fold-k models "
               "learnt from labels made by models that saw fold k")
    else:
        return False
    if not cfg.pseudo.allow_leak:
        raise ConfigError(
            f"'pseudo.source' {source} {why}, so each fold's model would learn its own "
            "validation labels and CV would be inflated. Use a leak-free run as the source, "
            "or set 'pseudo.allow_leak: true' to accept the leak"
        )
    log.warning("pseudo: LEAKY setup: %s %s; this run's CV will be optimistic and the run is "
                "marked leaky in its run.json", source, why)
    return True


def _source_predictions(cfg: ExperimentConfig, comp: Competition) -> dict[int, np.ndarray]:
    """Test predictions per fold of this run: the source's fold-k models for fold k."""
    assert cfg.pseudo is not None
    source = Path(cfg.pseudo.source)
    meta = read_meta(source)
    _check_source_test(cfg, meta, source)
    if meta.pred_columns != comp.pred_columns or meta.task != cfg.competition.task:
        raise DataError(
            f"pseudo source {source} predicts {meta.task} {meta.pred_columns}; this run needs "
            f"{cfg.competition.task} {comp.pred_columns}"
        )
    if meta.classes != comp.classes:  # a binary column under another positive class: the
        # source's P(yes) read as this run's P(no) labelled every confident row the other way
        raise DataError(
            f"pseudo source {source} predicts classes {meta.classes} (binary: the "
            f"probability of the last); this run needs {comp.classes}: train the source under "
            "the same 'competition.positive_class'"
        )
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    test_ids = comp.test[id_col].astype(str)
    per_fold = source / "test_folds.parquet"
    if per_fold.is_file():
        if Path(meta.folds_file) != cfg.folds_file:
            raise DataError(
                f"pseudo source {source} was trained on folds {meta.folds_file}, this run uses "
                f"{cfg.folds_file}: its fold-k models may have seen this run's fold-k rows"
            )
        return _per_fold(cfg, pd.read_parquet(per_fold), test_ids, per_fold, cols)
    path = source / "test.parquet"
    p = _rows(pd.read_parquet(path), id_col, test_ids, path, cols)
    return dict.fromkeys(range(cfg.folds.n_splits), p)


def _check_source_test(cfg: ExperimentConfig, meta: RunMeta, source: Path) -> None:
    """Refuse a source whose test predictions are not of this run's test file: its labels
    would be of other rows' features, under the same ids. Checked against the file this run
    reads, not the one the source recorded: a round on the competition's copy with its
    hidden test set (the source not predicted there) found the old file unchanged and
    paired the old rows' labels with the new rows without a word."""
    here = dataclasses.replace(meta, competition_dir=str(cfg.competition.dir),
                               test_file=cfg.competition.test_file)
    predicted = Path(meta.competition_dir) / meta.test_file
    try:
        check_test_file(here, source)
    except DataError:
        if predicted == Path(cfg.competition.dir) / cfg.competition.test_file:
            raise
        raise DataError(
            f"{Path(cfg.competition.dir) / cfg.competition.test_file} is not the test file "
            f"{source} predicted ({predicted}): its pseudo-labels would be of other rows. "
            "Predict the source on this competition first (pipeline predict --config <its "
            f"config> --set competition.dir={cfg.competition.dir}; a scikit-learn source: "
            "pipeline train)") from None


def _rows(frame: pd.DataFrame, id_col: str, ids: pd.Series, path: Path,
          cols: list[str]) -> np.ndarray:
    """``cols`` of ``frame`` at ``ids``, in their order (mean over repeated ids: seeds)."""
    by_id = frame.assign(**{id_col: frame[id_col].astype(str)}).groupby(id_col)[cols].mean()
    missing = ids[~ids.isin(by_id.index)]
    if len(missing):
        raise DataError(f"pseudo source file {path} has no prediction for {len(missing)} of "
                        f"this run's {len(ids)} rows (such as id {missing.iloc[0]!r}): it was "
                        "made from other train/test files; train the source on these")
    return by_id.loc[ids].to_numpy(dtype=np.float64)


def _per_fold(cfg: ExperimentConfig, frame: pd.DataFrame, ids: pd.Series, path: Path,
              cols: list[str]) -> dict[int, np.ndarray]:
    """Each fold's predictions of ``ids`` in a per-fold file (seed, fold, id, predictions):
    the mean of the source's fold-k models (over seeds) for fold k."""
    id_col = cfg.competition.id_column
    return {fold: _rows(frame[frame["fold"] == fold], id_col, ids, path, cols)
            for fold in range(cfg.folds.n_splits)}


def _unlabelled_predictions(cfg: ExperimentConfig,
                            comp: Competition) -> dict[int, np.ndarray] | None:
    """Per fold, the source's predictions of the train rows kept without a target, made as
    its test predictions; None where there are no such rows, or (with a warning) where the
    source did not predict them per fold."""
    assert cfg.pseudo is not None
    if comp.unlabelled is None:
        return None
    source = Path(cfg.pseudo.source)
    path = source / UNLABELLED_FOLDS
    if not (source / "test_folds.parquet").is_file() or not path.is_file():
        why = ("a blend has no per-fold predictions of them" if not (
            source / "test_folds.parquet").is_file() else "trained under 'drop' or by an older "
            "release: train it again under 'competition.unlabelled_train_rows: unlabelled'")
        log.warning("pseudo: the %d train rows without a target are not pseudo-labelled, only "
                    "the test rows: source %s has no %s (%s)", len(comp.unlabelled), source,
                    UNLABELLED_FOLDS, why)
        return None
    ids = comp.unlabelled[cfg.competition.id_column].astype(str)
    return _per_fold(cfg, pd.read_parquet(path), ids, path, comp.pred_columns)


def _selection(cfg: ExperimentConfig) -> str:
    """The pseudo settings that choose the rows, as the config spells them."""
    assert cfg.pseudo is not None
    keys = ("threshold", "top_fraction", "balance")
    return ", ".join(f"{k}: {getattr(cfg.pseudo, k)}" for k in keys
                     if getattr(cfg.pseudo, k, None) not in (None, False))


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> Path:
    """Write every fold's pseudo-labelled rows; returns the folder."""
    if cfg.pseudo is None:
        raise ConfigError(f"config {cfg.name!r} has no 'pseudo' section")
    comp = comp or load_competition(cfg.competition)
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    leaky = source_leaky(cfg)
    test = _source_predictions(cfg, comp)
    unlabelled = _unlabelled_predictions(cfg, comp)  # read before any write: may refuse
    ids = comp.test[id_col].to_numpy()
    parts = np.full(len(ids), "test", dtype=object)
    if unlabelled is not None and comp.unlabelled is not None:
        ids = np.concatenate([ids, comp.unlabelled[id_col].to_numpy()])
        parts = np.concatenate([parts, np.full(len(comp.unlabelled), "unlabelled", object)])
    summary, from_unlabelled = {}, {}
    for fold, p in test.items():
        if unlabelled is not None:  # one pool: the selection ranks both kinds of rows alike
            p = np.concatenate([p, unlabelled[fold]])
        rows, labels = select(p, cfg.competition.task, cfg.pseudo)
        frame = pd.DataFrame(labels, columns=cols)
        frame.insert(0, "part", parts[rows])
        frame.insert(0, id_col, ids[rows])
        frame["weight"] = cfg.pseudo.weight
        frame["source_fold"] = -1 if leaky else fold
        write_parquet(pseudo_path(cfg, fold), frame)
        summary[f"fold{fold}"] = len(frame)
        from_unlabelled[f"fold{fold}"] = int((frame["part"] == "unlabelled").sum())
        if frame.empty:  # said here: the run's CV would otherwise hide that nothing was added
            log.warning("pseudo: no %s row passed the selection for fold %d (%s); its model "
                        "trains on its own rows alone",
                        "test or unlabelled train" if unlabelled else "test", fold,
                        _selection(cfg))
    folder = cfg.run_dir / "pseudo"
    write_json(folder / "summary.json", {"source": cfg.pseudo.source, "leaky": leaky,
                                         "rows": summary, "unlabelled_rows": from_unlabelled})
    log.info("pseudo: %s rows per fold, of %d test rows (%s; %s labels, weight %g), from %s%s",
             summary, len(comp.test), _selection(cfg) or "every row", cfg.pseudo.labels,
             cfg.pseudo.weight, cfg.pseudo.source, " (LEAKY)" if leaky else "")
    if unlabelled is not None:
        log.info("pseudo: of which train rows without a target (of %d): %s",
                 len(comp.unlabelled) if comp.unlabelled is not None else 0, from_unlabelled)
    return folder
