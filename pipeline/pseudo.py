"""Pseudo stage: confident test predictions of an earlier run -> labelled rows per fold.

Leak-free by construction: the pseudo-labels for fold k come only from the source run's
fold-k models (averaged over its seeds). Those models trained without fold k's rows, so the
fold-k model of this run never learns fold k's validation labels through its pseudo rows,
and its OOF score stays honest; chaining rounds (each run the source of the next) keeps
that property. A source without per-fold test predictions (a blend) would feed every
fold's labels into every fold: it is refused unless ``pseudo.allow_leak`` is set.

Writes ``<run>/pseudo/fold<k>.parquet``: id, one column per prediction column (the label:
one-hot / 0-1 / value for hard labels, probabilities for soft ones), ``weight`` and
``source_fold`` (the fold whose models made the label; -1 when leaky).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import read_meta, write_json, write_parquet
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.pseudo_labels import select
from pipeline.errors import ConfigError, DataError
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
    if meta.pred_columns != comp.pred_columns or meta.task != cfg.competition.task:
        raise DataError(
            f"pseudo source {source} predicts {meta.task} {meta.pred_columns}; this run needs "
            f"{cfg.competition.task} {comp.pred_columns}"
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
        frame = pd.read_parquet(per_fold)
        frame[id_col] = frame[id_col].astype(str)
        out = {}
        for fold in range(cfg.folds.n_splits):
            part = frame[frame["fold"] == fold].groupby(id_col)[cols].mean()
            out[fold] = part.loc[test_ids].to_numpy(dtype=np.float64)
        return out
    test = pd.read_parquet(source / "test.parquet")
    test[id_col] = test[id_col].astype(str)
    p = test.set_index(id_col).loc[test_ids, cols].to_numpy(dtype=np.float64)
    return dict.fromkeys(range(cfg.folds.n_splits), p)


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
    summary = {}
    for fold, p in _source_predictions(cfg, comp).items():
        rows, labels = select(p, cfg.competition.task, cfg.pseudo)
        frame = pd.DataFrame(labels, columns=cols)
        frame.insert(0, id_col, comp.test[id_col].to_numpy()[rows])
        frame["weight"] = cfg.pseudo.weight
        frame["source_fold"] = -1 if leaky else fold
        write_parquet(pseudo_path(cfg, fold), frame)
        summary[f"fold{fold}"] = len(frame)
        if frame.empty:  # said here: the run's CV would otherwise hide that nothing was added
            log.warning("pseudo: no test row passed the selection for fold %d (%s); its model "
                        "trains on its own rows alone", fold, _selection(cfg))
    folder = cfg.run_dir / "pseudo"
    write_json(folder / "summary.json", {"source": cfg.pseudo.source, "leaky": leaky,
                                         "rows": summary})
    log.info("pseudo: %s rows per fold from %s%s", summary, cfg.pseudo.source,
             " (LEAKY)" if leaky else "")
    return folder
