"""The run-folder contract between the train, predict, pseudo and blend stages: where each
(seed, fold) lives, when it is complete, what identifies its predictions, and how folds are
gathered into the run's ``oof.parquet`` / ``test.parquet`` (layout: :mod:`pipeline.artifacts`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import folds as folds_stage
from pipeline.artifacts import (
    RunMeta,
    read_fold_rows,
    read_json,
    read_meta,
    read_parquet,
    write_json,
    write_meta,
    write_parquet,
    write_yaml,
)
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.config_diff import snapshot_diff
from pipeline.data.splits import predicting_folds, read_folds
from pipeline.data_files import changed_files, data_digests
from pipeline.errors import ConfigError, DataError, OtherConfigRun
from pipeline.file_digests import damaged_files
from pipeline.full_fit_predictions import combine, full_model_tests
from pipeline.metrics import get_metric
from pipeline.pooled_score import pooled_gap_note
from pipeline.run_postprocess import save_postprocess, tune_run_postprocess
from pipeline.run_unlabelled import gather_unlabelled
from pipeline.train_hash import train_hashes
from pipeline.tta_views import say_view_scores, view_scores

log = logging.getLogger(__name__)
LAST_EPOCH_OOF = "oof_last_epoch.parquet"  # a network fold's last-epoch held-out predictions
# What a fold folder holds, by release: 2 = inputs from the shared scikit-learn column
# encoder. A fold of another format is trained again rather than read with the wrong inputs.
FOLD_FORMAT = 2
# The fold number of a seed's full model ('train.full_fit', pipeline.full_fit): no row's
# fold, so it trains on every row and validates on none; its folder is seed<s>/full
FULL_FIT = -1


def fold_dir(cfg: ExperimentConfig, seed: int, fold: int) -> Path:
    """``<run>/seed{seed}/fold{fold}`` (``<run>/seed{seed}/full`` for :data:`FULL_FIT`)."""
    return cfg.run_dir / f"seed{seed}" / ("full" if fold == FULL_FIT else f"fold{fold}")


def fold_label(cfg: ExperimentConfig, seed: int, fold: int) -> str:
    """How logs name a (seed, fold) job: as its folder does (``seed0/fold0``), with the
    number of folds."""
    if fold == FULL_FIT:
        return f"{cfg.name} seed{seed}/full (every train row)"
    return f"{cfg.name} seed{seed}/fold{fold} (of {cfg.folds.n_splits})"


def pseudo_path(cfg: ExperimentConfig, fold: int) -> Path:
    """``<run>/pseudo/fold<k>.parquet``: the pseudo-labelled rows fold ``k`` trains on."""
    return cfg.run_dir / "pseudo" / f"fold{fold}.parquet"


# What a finished fold's metrics.json vouches for (with a checksum of each), and what its
# predictions.json vouches for: a damaged or truncated file is found on the next run and
# made again, instead of breaking every later stage.
TRAINED_FILES = ("best.pt", "snapshot_*.pt", "preprocess.json", "tabular.joblib",
                 "model.joblib", LAST_EPOCH_OOF)
# member*: a train.ensemble's members (engine.member_ensemble); unlabelled: run_unlabelled
PREDICTION_FILES = ("oof.parquet", "test.parquet", "unlabelled.parquet", "tta_*.parquet",
                    "member*_*.parquet")


# a fold's resume point and what it fitted on its training rows: dropped where the fold must
# start again (its inputs or config changed, a finished fold is retrained)
RESTART_FILES = ("last.pt", "best.pt", "preprocess.json", "tabular.joblib")


def trained_on(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The inputs (:func:`changed_files` parts) a fold's training reads: a scikit-learn fold
    predicts the test rows as it trains, a consistency or pseudo-label run trains on them
    (the latter on its fold's pseudo-labels too); every fold on the rows it validates on."""
    parts = ("train", "test") if cfg.model.is_sklearn or cfg.train.consistency or (
        cfg.pseudo is not None) else ("train",)
    return parts + (("pseudo",) if cfg.pseudo is not None else ()) + ("folds",)


def fold_complete(cfg: ExperimentConfig, seed: int, fold: int, reset: bool = True,
                  parts: tuple[str, ...] | None = None) -> bool:
    """Whether the fold finished training under this config on the inputs ``parts`` (default
    :func:`trained_on`), its files intact. Otherwise the fold is reset, so the next train
    retrains it, unless ``reset=False`` (a stage that only reads the fold)."""
    folder = fold_dir(cfg, seed, fold)
    path = folder / "metrics.json"
    if not path.is_file():
        return False
    try:
        done = read_json(path)
    except ValueError:  # cut off mid-write by an older release, or damaged: train it again
        log.warning("%s is unreadable; the fold is trained again", path)
        return False
    if done.get("config_hash") not in train_hashes(cfg) or done.get("format") != FOLD_FORMAT:
        return False
    changed = changed_files(done.get("data"), cfg, parts or trained_on(cfg), fold)
    damaged = [] if changed else damaged_files(folder, done.get("files", {}),
                                          TRAINED_FILES + PREDICTION_FILES)
    if (changed or damaged) and not reset:
        return False
    if changed or damaged:
        log.warning("%s: %s; the fold is trained again", fold_label(cfg, seed, fold),
                    f"the {' and '.join(changed)} file changed since it trained" if changed
                    else f"{damaged} damaged or missing")
        # its preprocessing too (scaler, category codes, target scale): kept, it was fitted
        # on the old train rows, and the fold retrained on them was no fresh run's fold
        for name in ("metrics.json", "predictions.json", *RESTART_FILES):
            (folder / name).unlink(missing_ok=True)
        for snapshot in folder.glob("snapshot_*.pt"):
            snapshot.unlink()
        return False
    return True


def load_folds(cfg: ExperimentConfig, comp: Competition) -> np.ndarray:
    """The competition's folds, made first if the folds stage has not run."""
    path = folds_stage.run(cfg, comp)
    return read_folds(path, comp, cfg.folds.n_splits)


def prepare_run_dir(cfg: ExperimentConfig, comp: Competition, leaky: bool = False,
                    overwrite: bool = False) -> RunMeta:
    """Create the run folder with its config snapshot. A folder of another config is refused
    with the keys that differ, unless ``overwrite`` (or nothing was trained there yet: a start
    that failed leaves nothing that blocks the corrected config). ``leaky``: the run trains
    on pseudo-labels that leak validation labels."""
    run_dir = cfg.run_dir
    meta = RunMeta(
        name=cfg.name, task=cfg.competition.task, metric=cfg.competition.metric,
        id_column=cfg.competition.id_column, target_columns=list(cfg.competition.target_columns),
        classes=comp.classes, pred_columns=comp.pred_columns, folds_file=str(cfg.folds_file),
        competition_dir=str(cfg.competition.dir), train_file=cfg.competition.train_file,
        config_hash=cfg.train_hash(), leaky=leaky,
        sample_submission_file=cfg.competition.sample_submission_file,
        csv_sep=cfg.competition.sep, csv_encoding=cfg.competition.encoding,
        csv_quoting=cfg.competition.quoting,
        csv_decimal=cfg.competition.decimal, csv_thousands=cfg.competition.thousands,
        csv_na_values=list(cfg.competition.na_values),
        test_file=cfg.competition.test_file, label_separator=comp.label_separator,
        missing_targets=cfg.competition.missing_targets, ratings=comp.ratings,
        positive_class=cfg.competition.positive_class)
    meta_path = run_dir / "run.json"
    if meta_path.is_file():
        try:
            old = read_json(meta_path).get("config_hash")
        except DataError as err:  # written again below; each fold's own record decides
            log.warning("%s; it is written again", err)  # whether it trains again
            old = meta.config_hash
        if old not in train_hashes(cfg, strict=True):
            _replace_or_refuse(cfg, overwrite)
    write_yaml(run_dir / "config.yaml", cfg.to_dict())
    write_meta(run_dir, meta)
    write_json(run_dir / "env.json", {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.cuda.is_available(), "platform": platform.platform(),
    })
    return meta


def _replace_or_refuse(cfg: ExperimentConfig, overwrite: bool) -> None:
    run_dir = cfg.run_dir
    trained = [p for p in run_dir.rglob("*") if p.name in ("metrics.json", "last.pt", "best.pt")]
    if overwrite or not trained:
        log.info("%s: replacing %s (%s)", cfg.name, run_dir,
                 "--overwrite" if overwrite else "its earlier start trained nothing")
        for item in run_dir.iterdir():
            if item.name == "log.txt":  # the open log of this very command
                continue
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        return
    diff = snapshot_diff(cfg, 8)
    raise OtherConfigRun(
        f"{run_dir} holds a run of another config ({diff}). Pass --overwrite to retrain it in "
        f"place, --new-version for the next free '{cfg.name}-v<k>', or change 'name'",
        run_dir, diff)


def holds_config(cfg: ExperimentConfig) -> bool:
    """Whether the run folder was made by this training config (an earlier start of it)."""
    meta = cfg.run_dir / "run.json"
    return meta.is_file() and read_json(meta).get("config_hash") in train_hashes(cfg)


def next_version(cfg: ExperimentConfig) -> str:
    """The first name ``<name>-v2``, ``-v3``, ... whose run folder is free or holds this very
    config (so a rerun with --new-version resumes it instead of starting a v4)."""
    base = re.sub(r"-v\d+$", "", cfg.name)
    candidates = [cfg.name] + [f"{base}-v{k}" for k in range(2, 1000)]
    for name in candidates:
        meta = Path(cfg.output_dir) / name / "run.json"
        if not meta.is_file() or read_json(meta).get("config_hash") in train_hashes(cfg):
            return name
    raise ConfigError(f"no free version of {cfg.name!r} under {cfg.output_dir}")


def fold_score(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
               fold: int) -> float:
    """The competition metric of a fold's OOF predictions (logged)."""
    oof = read_parquet(fold_dir(cfg, seed, fold) / "oof.parquet")
    score = get_metric(cfg.competition.metric, comp.scored_values)(
        comp.targets[folds == fold], oof[comp.pred_columns].to_numpy(dtype=np.float64))
    log.info("%s: %s %.5f", fold_label(cfg, seed, fold), cfg.competition.metric, score)
    return score


def gather(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray) -> float:
    """Merge fold predictions into ``oof.parquet``, ``test.parquet``, ``test_folds.parquet``
    (``unlabelled_folds.parquet``) and ``scores.json``, and each seed's into ``seed<s>/`` as an
    ensemble member of its own; returns the OOF score."""
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    metric = get_metric(cfg.competition.metric, comp.scored_values)
    y = comp.targets
    n_train = len(comp.train)
    # the test file the folds predicted, where it lies now (a code competition's notebook):
    # the submission is checked against that folder
    digests = data_digests(cfg)
    meta = dataclasses.replace(read_meta(cfg.run_dir), test_digest=digests.get("test", ""),
                               test_images_digest=digests.get("test_images", ""),
                               competition_dir=str(cfg.competition.dir),
                               folds_file=str(cfg.folds_file))
    oof_sum = np.zeros((n_train, len(cols)))
    test_parts, scores = [], {}
    test_ids = comp.test[id_col].astype(str).to_numpy()
    full = full_model_tests(comp, {s: fold_dir(cfg, s, FULL_FIT) for s in cfg.train.seeds}
                            ) if cfg.train.full_fit else {}
    meta = dataclasses.replace(meta, full_fit=cfg.train.full_fit_combine if full else "")
    for seed in cfg.train.seeds:
        oof = np.full((n_train, len(cols)), np.nan)
        for fold in range(cfg.folds.n_splits):
            out = fold_dir(cfg, seed, fold)
            rows = np.flatnonzero(folds == fold)
            part = read_parquet(out / "oof.parquet")
            expected = comp.train[id_col].iloc[rows].astype(str).tolist()
            if part[id_col].astype(str).tolist() != expected:
                raise DataError(f"{out / 'oof.parquet'} holds other ids than fold {fold}")
            oof[rows] = part[cols].to_numpy(dtype=np.float64)
            test_parts.append(read_fold_rows(out / "test.parquet", id_col, test_ids, seed, fold,
                                             cfg.competition.test_file))
            scores[f"seed{seed}/fold{fold}"] = metric(y[rows], oof[rows])
        if np.isnan(oof).any():
            raise DataError(f"OOF predictions of seed {seed} miss rows: folds incomplete")
        scores[f"seed{seed}"] = metric(y, oof)
        oof_sum += oof
        _write_member(cfg, comp, folds, seed, oof, test_parts[-cfg.folds.n_splits:], meta,
                      full.get(seed))
        _write_ensemble_members(cfg, comp, folds, seed, meta, scores)
    oof_mean = oof_sum / len(cfg.train.seeds)
    overall = metric(y, oof_mean)
    scores["oof"] = overall
    rule, post = tune_run_postprocess(cfg, metric, y, oof_mean, folds)  # before any write
    last = _last_epoch_oof(cfg, comp, folds)
    if last is not None:
        scores["oof_last_epoch"] = metric(y, last)
    oof_frame = _predictions_frame(comp.train[id_col].to_numpy(), oof_mean, cols, id_col, folds)
    test_folds = pd.concat(test_parts, ignore_index=True)  # every fold's, kept whole
    test_frame = _test_mean(cfg, test_folds, cols).loc[comp.test[id_col]].reset_index()
    if full:  # combined per seed or over the seeds alike: both ways are linear
        test_frame[cols] = combine(test_frame[cols].to_numpy(dtype=np.float64),
                                   np.mean(list(full.values()), axis=0), meta.full_fit)
    run_dir = cfg.run_dir
    write_parquet(run_dir / "oof.parquet", oof_frame)
    write_parquet(run_dir / "test_folds.parquet", test_folds)
    write_parquet(run_dir / "test.parquet", test_frame)
    gather_unlabelled(cfg, comp, fold_dir)
    save_postprocess(run_dir, rule)
    write_meta(run_dir, meta)
    summary = {"metric": metric.name, "direction": metric.direction, "scores": scores}
    write_json(run_dir / "scores.json", summary | ({"postprocess": post} if post else {})
               | ({"full_fit": meta.full_fit} if full else {}))
    per_fold = np.array([v for k, v in scores.items() if "/fold" in k])
    # a fold whose metric is undefined (ROC AUC of a fold of one class) is left out of the
    # mean, and said, rather than making it NaN
    defined = per_fold[np.isfinite(per_fold)]
    n_undefined = per_fold.size - defined.size
    undefined = f", {n_undefined} undefined" if n_undefined else ""
    log.info("%s: OOF %s %.5f; folds %.5f +- %.5f (%d seed(s) x %d folds%s) -> %s", cfg.name,
             metric.name, overall, float(np.mean(defined)) if defined.size else np.nan,
             float(np.std(defined)) if defined.size else np.nan,
             len(cfg.train.seeds), cfg.folds.n_splits, undefined, run_dir)
    pooled_note = pooled_gap_note(metric, overall, per_fold, oof_mean, folds)
    if pooled_note:
        log.warning("%s: %s", cfg.name, pooled_note)
    views = [fold_dir(cfg, s, k) / "tta_oof.parquet" for s in cfg.train.seeds
             for k in range(cfg.folds.n_splits)] if cfg.predict.tta else []
    say_view_scores(cfg.name, metric, view_scores(
        views, id_col, comp.train[id_col].astype(str).tolist(), cols, metric, y), overall)
    if last is not None and cfg.train.predicting_epoch == "best":
        log.info("%s: OOF %s of the last epochs %.5f; %s", cfg.name, metric.name,
                 scores["oof_last_epoch"], last_epoch_note(cfg, overall, scores["oof_last_epoch"]))
    return overall


def last_epoch_note(cfg: ExperimentConfig, best: float, last: float) -> str:
    """What the last epochs' OOF score ``last`` says beside the run's ``best``. It is the
    last validation's, without TTA: beside a TTA score it does not measure the best epoch's
    selection bias alone (a TTA that hurts made a lower best-epoch score look 'optimistic')."""
    if cfg.predict.tta:
        return ("without TTA, which the score above has: the two differ by TTA as well as "
                "by the epoch chosen")
    if f"{best:.5f}" == f"{last:.5f}":
        # equal scores say nothing of which epochs were chosen (accuracy ties on other epochs)
        return "the same: choosing the best epochs gained nothing on these rows"
    return "the best epochs' score above was chosen on the same rows, so it is the optimistic one"


def _last_epoch_oof(cfg: ExperimentConfig, comp: Competition,
                    folds: np.ndarray) -> np.ndarray | None:
    """Mean over seeds of the last-epoch OOF predictions, or None when a fold has none (a
    scikit-learn model, or a fold trained by an older release)."""
    cols, id_col = comp.pred_columns, cfg.competition.id_column
    total = np.zeros((len(comp.train), len(cols)))
    for seed in cfg.train.seeds:
        for fold in range(cfg.folds.n_splits):
            path = fold_dir(cfg, seed, fold) / LAST_EPOCH_OOF
            if not path.is_file():
                return None
            part = read_parquet(path)
            rows = np.flatnonzero(folds == fold)
            if part[id_col].astype(str).tolist() != comp.train[id_col].iloc[rows].astype(
                    str).tolist():
                raise DataError(f"{path} holds other ids than fold {fold}")
            total[rows] += part[cols].to_numpy(dtype=np.float64)
    return total / len(cfg.train.seeds)


def _predictions_frame(ids: np.ndarray, values: np.ndarray, cols: list[str], id_col: str,
                       folds: np.ndarray | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=cols)
    if folds is not None:
        frame.insert(0, "fold", folds)
    frame.insert(0, id_col, ids)
    return frame


def _test_mean(cfg: ExperimentConfig, per_fold: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The test predictions (by id) of the fold models that predict the test
    (:func:`pipeline.data.splits.predicting_folds`), mean over those folds and the seeds."""
    kept = per_fold["fold"].isin(predicting_folds(cfg.folds.scheme, cfg.folds.n_splits))
    return per_fold[kept].groupby(cfg.competition.id_column, sort=False)[cols].mean()


def _write_member(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
                  oof: np.ndarray, test_parts: list[pd.DataFrame], meta: RunMeta,
                  full: np.ndarray | None = None) -> None:
    """``seed<s>/`` as a run of its own (run.json, oof, test): one ensemble member per seed;
    ``full``: its full model's test predictions, combined as the run's are."""
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    folder = cfg.run_dir / f"seed{seed}"
    test = _test_mean(cfg, pd.concat(test_parts), cols).loc[comp.test[id_col]].reset_index()
    if full is not None:
        test[cols] = combine(test[cols].to_numpy(dtype=np.float64), full, meta.full_fit)
    write_parquet(folder / "oof.parquet", _predictions_frame(
        comp.train[id_col].to_numpy(), oof, cols, id_col, folds))
    write_parquet(folder / "test.parquet", test)
    write_meta(folder, dataclasses.replace(meta, name=f"{cfg.name}-seed{seed}"))


def _write_ensemble_members(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray,
                            seed: int, meta: RunMeta, scores: dict[str, float]) -> None:
    """``seed<s>/member<m>/`` as a run of its own for each member of a ``train.ensemble``
    (its fold files ``member<m>_oof.parquet`` gathered), its OOF score in ``scores``."""
    if cfg.train.ensemble is None:
        return
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    metric = get_metric(cfg.competition.metric, comp.scored_values)
    for m in range(cfg.train.ensemble.members):
        oof, tests = np.full((len(comp.train), len(cols)), np.nan), []
        for fold in range(cfg.folds.n_splits):
            out = fold_dir(cfg, seed, fold)
            if not (out / f"member{m}_oof.parquet").is_file():
                raise DataError(f"{out} has no member{m}_oof.parquet: predict the run again")
            part = read_parquet(out / f"member{m}_oof.parquet")
            oof[folds == fold] = part[cols].to_numpy(dtype=np.float64)
            tests.append(read_parquet(out / f"member{m}_test.parquet").assign(fold=fold))
        scores[f"seed{seed}/member{m}"] = metric(comp.targets, oof)
        folder = cfg.run_dir / f"seed{seed}" / f"member{m}"
        test = _test_mean(cfg, pd.concat(tests), cols)
        write_parquet(folder / "oof.parquet", _predictions_frame(
            comp.train[id_col].to_numpy(), oof, cols, id_col, folds))
        write_parquet(folder / "test.parquet", test.loc[comp.test[id_col]].reset_index())
        write_meta(folder, dataclasses.replace(meta, name=f"{cfg.name}-seed{seed}-member{m}"))


def read_scores(run_dir: Path) -> dict[str, Any]:
    """The run's ``scores.json``."""
    return json.loads((run_dir / "scores.json").read_text())
