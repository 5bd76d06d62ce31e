"""Submit stage: a run's or blend's test predictions -> ``submissions/<name>.csv``.

The file has exactly the ids, columns, column order and row order of
``sample_submission.csv``. The format follows the sample: one column per class (named by the
class, or ``<target>_<class>``) gets probabilities (binary tasks too); a single label
column of a classification task gets the predicted class in the train set's own label values
when the metric scores labels (accuracy, F1, ...), the k best classes separated by spaces under
a ranking metric (MAP@k), else the probability; a multilabel target written as one column of
space-separated labels gets each row's predicted labels so (at least one); regression gets the
values (held to the train target's range where the OOF says it helps:
:mod:`pipeline.clip_range`), or under QWK the ratings of the train file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.artifacts import (
    Predictions,
    RunMeta,
    id_positions,
    load_predictions,
    read_json,
    write_csv,
)
from pipeline.clip_range import ClipDecision, decide_clip
from pipeline.competition_files import read_csv
from pipeline.data_files import changed_files, check_blend_members, check_test_file
from pipeline.ensemble import load_postprocess
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import get_metric, hard_labels, is_number, nearest_rating, top_classes
from pipeline.output_folders import check_name
from pipeline.predicted_here import check_competition_found, check_predicted_here
from pipeline.run_targets import targets_for_meta
from pipeline.targets import per_class_columns, sample_columns_problem, sample_targets

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig

log = logging.getLogger(__name__)


def _labels(meta: RunMeta, p: np.ndarray, folder: Path) -> np.ndarray:
    """Hard labels: tuned post-processing when the folder has it, else argmax / 0.5 (a
    regression on ratings: the index of the nearest rating)."""
    post = load_postprocess(folder)
    if post is not None:
        return post.labels(p)
    return nearest_rating(p[:, 0], meta.ratings) if meta.ratings else hard_labels(meta.task, p)


def tag_strings(labels: np.ndarray, p: np.ndarray, classes: list[Any],
                separator: str = " ") -> list[str]:
    """Each row's predicted labels joined by ``separator``, in ``classes`` order (as the
    train file joins them: 'competition.label_separator'); a row where none
    passes its threshold takes its most probable label, since every train row holds one (an
    empty cell scores 0 under the per-row F-scores these competitions use)."""
    labels = labels.astype(bool)
    labels[np.arange(len(p)), p.argmax(axis=1)] |= ~labels.any(axis=1)
    names = np.array([str(c) for c in classes], dtype=object)
    return [separator.join(names[row]) for row in labels]


# text labels whose last in sort order is the positive one by name: nothing to warn about
_NAMED_PAIRS = ({"no", "yes"}, {"false", "true"}, {"negative", "positive"}, {"n", "y"},
                {"f", "t"}, {"neg", "pos"})


# binary label metrics that score one class as the positive one (F1 of 'rotten' is not F1 of
# 'fresh'); accuracy, MCC and the macro averages score both alike
_ONE_SIDED = ("f1", "precision", "recall")


def _say_positive(meta: RunMeta, column: str, labels: bool = False) -> None:
    """Name the class whose probability a binary submission's one column holds (``labels``:
    the positive class of the F1, precision or recall its labels were chosen for). Text labels
    ('fresh'/'rotten', 'real'/'fake') give the label that sorts last unless
    'competition.positive_class' names one, and the scorer may want the other: a warning
    then, since a probability of the wrong class scores ROC AUC 1 - AUC."""
    negative, positive = meta.classes
    text = not all(is_number(c) or isinstance(c, bool) for c in meta.classes)
    guessed = (meta.positive_class is None and text
               and {str(c).lower() for c in meta.classes} not in _NAMED_PAIRS)
    held = (f"labels chosen for the {meta.metric} of {positive!r} as the positive class"
            if labels else f"each row's probability of {positive!r}")
    if guessed:
        log.warning("submission: column %r holds %s, the label that sorts last of %s; if the "
                    "competition scores %s, set 'competition.positive_class: %s'", column,
                    held, [negative, positive],
                    f"{negative!r} as positive" if labels else f"the probability of {negative!r}",
                    negative)
    else:
        log.info("submission: column %r holds %s", column, held)


def format_submission(meta: RunMeta, test: pd.DataFrame, sample: pd.DataFrame,
                      folder: Path, clip: ClipDecision | None = None) -> pd.DataFrame:
    """Predictions laid out like ``sample`` (ids, columns, row order); a regression's values
    through ``clip`` where given."""
    id_col = meta.id_column
    sample_path = Path(meta.competition_dir) / meta.sample_submission_file
    if id_col not in sample.columns:
        raise DataError(f"{sample_path}: id column {id_col!r} not found")
    columns = [c for c in sample.columns if c != id_col]
    absent = [c for c in (id_col, *meta.pred_columns) if c not in test.columns]
    if absent:
        raise DataError(
            f"{folder / 'test.parquet'}: column(s) {absent} named by {folder / 'run.json'} "
            f"not found. Columns: {list(test.columns)}"
        )
    duplicated = test[id_col].astype(str).duplicated()
    if duplicated.any():
        raise DataError(f"{folder / 'test.parquet'}: duplicate ids, e.g. "
                        f"{test[id_col][duplicated].astype(str)[:3].tolist()}")
    where, ids = id_positions(test[id_col], sample[id_col])
    missing = ids[where < 0]
    extra = len(test) - (len(ids) - len(missing))
    if len(missing) or extra:
        raise DataError(
            f"test predictions in {folder} do not cover the ids of {sample_path}: "
            f"{len(missing)} missing (e.g. {missing[:3].tolist()}), {extra} extra"
        )
    p = test[meta.pred_columns].to_numpy(dtype=np.float64)[where]
    if not np.isfinite(p).all():
        bad = ids[~np.isfinite(p).all(axis=1)][:3].tolist()
        raise DataError(f"test predictions in {folder} hold NaN/inf (ids {bad})")
    out = pd.DataFrame({id_col: sample[id_col].to_numpy()})
    metric = get_metric(meta.metric)
    class_of = per_class_columns(columns, meta.task, meta.target_columns, meta.classes)
    if class_of is not None:
        # one probability column per class (a binary run predicts its positive class alone),
        # or per label of a tags column (its 0/1 decisions where the metric scores labels)
        per_class = np.column_stack([1.0 - p[:, 0], p[:, 0]]) if meta.task == "binary" else p
        if meta.task == "multilabel" and metric.needs_labels:
            per_class = _labels(meta, p, folder)
        elif meta.task == "multiclass":
            # the predictions are stored as float32: their rows summed to 1 within ~1e-7,
            # which scikit-learn's log_loss warns about ("do not sum to one") and a strict
            # scorer may refuse; summed in float64 they are a distribution again
            per_class = p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        for c, k in zip(columns, class_of, strict=True):
            out[c] = per_class[:, k]
    elif meta.task == "multilabel" and meta.classes:  # one column of labels, as train's
        out[columns[0]] = tag_strings(_labels(meta, p, folder), p, meta.classes,
                                       meta.label_separator)
    elif (targets := sample_targets(columns, meta.target_columns)) is not None:
        # the sample may list the target columns in another order than the config (scorers
        # read them by name), or spell them otherwise: each is filled from its own target's
        order = [meta.target_columns.index(t) for t in targets]
        if meta.task == "regression" and meta.ratings:
            # scored as ratings (QWK): each row's rating as the train file writes it (3, not
            # 3.0), placed by the tuned cut points where the folder has them, else the nearest
            out[columns[0]] = [meta.ratings[int(i)] for i in _labels(meta, p, folder)]
        elif meta.task == "regression":
            # what the metric scores: RMSLE clips predictions below 0, and its scorers refuse them
            values = p if metric.lower_bound is None else np.maximum(p, metric.lower_bound)
            out[columns] = (values if clip is None else clip.apply(values))[:, order]
        elif meta.task == "multiclass" and metric.top_k:
            # a ranking metric (MAP@k) scores the k best classes, space-separated, best first
            out[columns[0]] = [" ".join(str(meta.classes[int(j)]) for j in row)
                               for row in top_classes(p, metric.top_k)]
        elif meta.task in ("binary", "multiclass") and (
            metric.needs_labels or meta.task == "multiclass"
        ):
            labels = _labels(meta, p, folder).reshape(len(p), -1)[:, 0]
            out[columns[0]] = [meta.classes[int(i)] for i in labels]
            if meta.task == "binary" and meta.metric in _ONE_SIDED:
                _say_positive(meta, columns[0], labels=True)
        elif meta.task == "multilabel" and metric.needs_labels:
            out[columns] = _labels(meta, p, folder)[:, order]  # thresholds in target order
        else:
            out[columns] = p[:, order]
            if meta.task == "binary":
                _say_positive(meta, columns[0])
    else:
        raise DataError(str(sample_columns_problem(columns, meta.task, meta.target_columns,
                                                   meta.classes, sample_path)))
    return out[list(sample.columns)]  # the sample's column order, its id column included


def check_config_run(cfg: ExperimentConfig, config_args: str = "--config CONFIG") -> str | None:
    """Refuse ``submit --config`` when the config's run folder holds predictions of another
    config: its training keys changed since the run (the competitor edited the config and
    submitted before training: the old model's submission, under the new config's name), or,
    for a network, its ``predict`` section (a new TTA not yet predicted), or of another test
    file (the run copied to a code competition's notebook, not predicted there). Returns the
    competition folder the submission follows: the config's, whose files its predictions
    were found current for (None where there is no run: load_predictions says what to run).
    ``config_args``: the command's ``--config`` and ``--set`` options, for the command named."""
    from pipeline.config_diff import snapshot_diff
    from pipeline.prediction_state import predict_change, predictions_current
    from pipeline.runs import (  # torch and the run machinery: only for a config's run
        fold_dir,
        holds_config,
        next_version,
    )

    run_dir = cfg.run_dir
    if not (run_dir / "run.json").is_file():
        return None  # load_predictions says what to run
    if not holds_config(cfg):
        version = next_version(cfg)
        held = (Path(cfg.output_dir) / version / "run.json").is_file()
        hint = (f"this config's run is {Path(cfg.output_dir) / version}: submit --run it"
                if held else "run the train stage first")
        raise ConfigError(f"{run_dir} holds a run of another config "
                          f"({snapshot_diff(cfg, 4)}); {hint}")
    for seed in cfg.train.seeds:  # the train file relabelled, the run not trained again
        for fold in range(cfg.folds.n_splits):
            done = fold_dir(cfg, seed, fold) / "metrics.json"
            changed = changed_files(read_json(done).get("data"), cfg,
                                    ("train", "test")) if done.is_file() else []
            if "train" in changed:
                raise DataError(f"{Path(cfg.competition.dir) / cfg.competition.train_file} "
                                f"changed since {run_dir} trained: run the train stage first")
            if cfg.model.is_sklearn and changed:  # it predicts its test rows as it trains
                raise DataError(f"{Path(cfg.competition.dir) / cfg.competition.test_file} is "
                                f"not the test file {run_dir} predicted: run pipeline train "
                                f"{config_args} first (it trains its folds again on it)")
    if not cfg.model.is_sklearn:  # one predicts as it trains: no predict section of its own
        for seed in cfg.train.seeds:
            for fold in range(cfg.folds.n_splits):
                if not (fold_dir(cfg, seed, fold) / "metrics.json").is_file():  # a fold folder
                    # deleted: 'run pipeline predict' was said, and predict then said to train
                    raise DataError(f"{fold_dir(cfg, seed, fold)} holds no trained fold: run "
                                    "the train stage first")
                if not predictions_current(cfg, seed, fold):
                    change = predict_change(cfg, seed, fold)
                    if change:  # named: the section it was predicted under may be the one
                        raise ConfigError(
                            f"{fold_dir(cfg, seed, fold)} was predicted under another "
                            f"'predict' section ({change}: predicted -> this config): submit "
                            f"with the section it was predicted under, or run pipeline "
                            f"predict {config_args} first")
                    raise ConfigError(f"{fold_dir(cfg, seed, fold)} was predicted under another"
                                      " 'predict' section or other train/test files: run "
                                      f"pipeline predict {config_args} first")
    # the run and its competition copied elsewhere, predictions current for the files there:
    # the run.json's folder (the old one, gone in a notebook) refused the sample submission
    return str(cfg.competition.dir)


def regression_clip(preds: Predictions, mode: str) -> ClipDecision | None:
    """The clip of a regression's submitted values (:mod:`pipeline.clip_range`); None for
    other tasks and for ratings (their cut points choose among the train file's values)."""
    meta = preds.meta
    if meta.task != "regression" or meta.ratings or mode == "off":
        return None
    train = Path(meta.competition_dir) / meta.train_file
    if not train.is_file():  # a run folder moved without its competition
        raise DataError(f"train file {train} not found: a regression's submission is held to "
                        "its targets' range where the OOF says so; submit --clip off writes "
                        "the values as they are")
    y = targets_for_meta(meta)
    if len(y) != len(preds.oof):
        raise DataError(f"{train} has {len(y)} labelled "
                        f"rows, the OOF of {meta.name} {len(preds.oof)}: the train file changed "
                        "since it trained; train it again")
    return decide_clip(mode, get_metric(meta.metric), y, preds.oof_matrix,
                       preds.oof["fold"].to_numpy())


def _log_clip(decision: ClipDecision, preds: Predictions) -> None:
    p, name = preds.test_matrix, preds.meta.metric
    outside = int(((p < decision.low) | (p > decision.high)).sum())
    without, with_clip, evidence = decision.oof_without, decision.oof_with, ""
    if without is not None and with_clip is not None:
        # digits enough to tell them apart: 'scores better; 0.59744 as it is, 0.59744 with'
        # read as a contradiction where the clip gained 2e-7
        digits = next((d for d in range(5, 12) if f"{without:.{d}f}" != f"{with_clip:.{d}f}"),
                      5)
        evidence = (f"; OOF {name} {without:.{digits}f} as it is, {with_clip:.{digits}f} "
                    "with each fold clipped to its training rows' range")
    ranges = ", ".join(f"[{lo:.6g}, {hi:.6g}]" for lo, hi in zip(decision.low, decision.high,
                                                                  strict=True))
    # none outside: 'clipped' said of a submission the clip left as it was
    verb = "nothing to clip" if not outside else "clipped" if decision.applied else "kept"
    log.info("submission: %d of %d test values outside the train target's range %s: %s (%s%s)",
             outside, p.size, ranges, verb, decision.reason, evidence)


def run(source: str | Path, name: str | None = None,
        submissions_dir: str | Path = "submissions", clip: str = "auto",
        competition_dir: str | None = None) -> Path:
    """Write the submission of a run or blend folder; returns its path. ``clip``: a
    regression's values held to the train target's range (auto, on, off:
    :mod:`pipeline.clip_range`). ``competition_dir``: the competition folder to follow
    instead of the one the folder recorded (:func:`check_config_run`'s)."""
    if name:
        check_name(name, "--name")
    folder = Path(source)
    preds = load_predictions(folder)
    if competition_dir is not None:
        preds = dataclasses.replace(preds, meta=dataclasses.replace(
            preds.meta, competition_dir=competition_dir))
    meta = preds.meta
    if competition_dir is None:  # the folder's own record: made here, for the files there
        check_predicted_here(meta, folder)
        check_competition_found(meta, folder)
    # else the config's folder, its predictions found current for it: wherever they lie
    check_test_file(meta, folder)
    check_blend_members(folder)
    sample_path = Path(meta.competition_dir) / meta.sample_submission_file
    if not sample_path.is_file():
        raise DataError(f"sample submission file {sample_path} not found")
    sample = read_csv(sample_path, "sample submission", meta.csv_sep, meta.csv_encoding,
                      meta.id_column)
    decision = regression_clip(preds, clip)
    submission = format_submission(meta, preds.test, sample, folder, decision)
    if decision is not None:  # after the format's checks of the test predictions
        _log_clip(decision, preds)
    path = Path(submissions_dir) / f"{name or meta.name}.csv"
    write_csv(path, submission)
    log.info("submission: wrote %s (%d rows, columns %s)", path, len(submission),
             list(submission.columns))
    return path
