"""Checks of a competition's train targets and of its sample submission's layout, with
errors that name the file, column and line (:func:`pipeline.competition.load_competition`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.metrics import METRICS, Metric, is_number
from pipeline.task_outputs import WHITESPACE, split_tags, tag_vocabulary

log = logging.getLogger(__name__)


def file_lines(index: pd.Index) -> list[int]:
    """File line numbers of frame rows (the header is line 1, the first row line 2)."""
    return [int(i) + 2 for i in index]


def plain(values: list[Any]) -> list[Any]:
    """NumPy scalars as Python ones, so messages show 3, not np.int64(3)."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def labelled_rows(frame: pd.DataFrame, target_columns: list[str], mode: str,
                  path: Path, missing: str = "row") -> pd.Series:
    """Which train rows hold every target (a row with one empty is not labelled: the losses
    and metrics take whole rows), or, under 'competition.missing_targets: mask', at least
    one (its empty cells are masked). Rows without are refused under
    'competition.unlabelled_train_rows: error', naming the option that keeps them out."""
    gaps = frame[target_columns].isna()
    masked = missing == "mask"
    empty = gaps.all(axis=1) if masked else gaps.any(axis=1)
    if masked and gaps.any(axis=None):
        log.info("%s: %d row(s) with some of their targets empty kept, each target learning "
                 "from its %s present cells ('competition.missing_targets: mask')", path,
                 int((gaps.any(axis=1) & ~empty).sum()),
                 {c: int(n) for c, n in (~gaps[~empty]).sum().items()})
    if not empty.any():
        return ~empty
    cols = [c for c in target_columns if gaps.loc[empty, c].any()]
    which = "every target empty" if masked else "an empty target"
    where = (f"{path}: {int(empty.sum())} of {len(frame)} row(s) have {which} "
             f"(column(s) {cols}, lines {file_lines(frame.index[empty][:3])})")
    if mode == "error":
        hint = "" if masked or len(target_columns) == 1 else (
            ", or set 'competition.missing_targets: mask' (keep rows with some targets)")
        raise DataError(f"{where}; set 'competition.unlabelled_train_rows' to 'drop' (leave "
                        f"them out) or 'unlabelled' (also learn from them without labels){hint}")
    if empty.all():
        raise DataError(f"{where}: every row, so there is nothing to train on")
    return ~empty


def masking_problem(task: str, target_columns: list[str], metric: Metric) -> str | None:
    """Why 'competition.missing_targets: mask' cannot apply to this competition, or None."""
    if task not in ("multilabel", "regression") or len(target_columns) < 2:
        return (f"'missing_targets: mask' masks the empty cells of several target columns "
                f"(task 'multilabel' or 'regression'). Got task {task!r} with target_columns "
                f"{target_columns}; use 'unlabelled_train_rows' for rows without a target")
    if metric.masked is None:
        fits = [n for n in METRICS if task in METRICS.get(n).tasks and METRICS.get(n).masked]
        return (f"'metric' {metric.name!r} scores whole rows, so it cannot score rows with "
                f"some targets empty ('missing_targets: mask'); metrics that score each target "
                f"or cell: {', '.join(fits)}")
    return None


def target_overlap(target_columns: list[str], id_column: str,
                   feature_columns: list[str] | None) -> str | None:
    """Why a target column is also the id or a listed feature, or None: a target is neither
    (test rows lack it; an id target was a traceback reading the files)."""
    for key, columns in (("id_column", [id_column]), ("feature_columns", feature_columns or [])):
        if both := sorted(set(target_columns) & set(columns)):
            return (f"'target_columns' {both} also named by {key!r}: a target is never the id "
                    "or a feature (test rows lack it)")
    return None


def target_classes(frame: pd.DataFrame, task: str, metric: str, target_columns: list[str],
                   path: Path, positive: Any = None, separator: str = WHITESPACE,
                   masked: bool = False) -> list[Any]:
    """Check the train file's target columns for ``task`` (and ``metric``'s domain); return
    the classes of a binary or multiclass target, sorted (binary: [negative, positive], the
    positive the larger label unless ``positive`` names it). ``masked``: a column's empty
    cells are masked ('competition.missing_targets: mask'), its values are those it holds."""
    if frame.empty:
        raise DataError(f"{path}: no rows under the header")
    for col in target_columns:
        values = frame[col].dropna() if masked else frame[col]
        if values.empty:
            raise DataError(f"{path}: target column {col!r} is empty in every row: there is "
                            "nothing to learn it from")
        n_nan = int(values.isna().sum())
        if n_nan:
            lines = file_lines(values.index[values.isna()][:3])
            raise DataError(f"{path}: target column {col!r} has {n_nan} NaN value(s) (lines "
                            f"{lines})")
        numeric = pd.api.types.is_numeric_dtype(values)
        if task == "regression" and not numeric:
            bad = values[pd.to_numeric(values, errors="coerce").isna()]
            # '0.5' under 'decimal: ","' is a number to pandas' parser but was read as text
            bad = values if bad.empty else bad
            # '24,000' or '1.234,5': a number whose marks the file's reading was not told
            marks = bad.astype(str).str.fullmatch(r"[+-]?\d[\d.,\s]*").mean() > 0.5
            raise DataError(
                f"{path}: target column {col!r} must be numeric for task 'regression'. "
                f"Got {len(bad)} value(s) that are not numbers, e.g. {bad.iloc[0]!r} (line "
                f"{file_lines(bad.index[:1])[0]})." + (
                    " Say how the file writes numbers with 'competition.decimal' and "
                    "'competition.thousands' (e.g. '1,234.5': \".\" and \",\")"
                    if marks else "")
            )
        if task == "regression" and np.isinf(values.to_numpy(dtype=float)).any():
            # an 'inf' cell (a division by zero upstream) reached the estimator's fit: a
            # traceback from the first fold, the folds file and run folder left behind
            inf = values[np.isinf(values.to_numpy(dtype=float))]
            raise DataError(
                f"{path}: target column {col!r} has {len(inf)} infinite value(s) (lines "
                f"{file_lines(inf.index[:3])}): no model can fit them; fix or drop those rows")
        bound = METRICS.get(metric).lower_bound
        if task == "regression" and bound is not None and values.min() < bound:
            low = values[values < bound]
            raise DataError(
                f"{path}: target column {col!r} has {len(low)} value(s) below {bound:g}, "
                f"which metric {metric!r} cannot score (minimum "
                f"{plain([values.min()])[0]!r}, line {file_lines(low.index[:1])[0]})"
            )
        if task == "multilabel" and not _zero_one(values):
            if len(target_columns) == 1:  # one column of labels separated by spaces
                return _tags(values, path, col, separator)
            raise DataError(
                f"{path}: target column {col!r} must hold 0/1 for task 'multilabel' (or, as "
                f"the only target column, labels joined by spaces, ',', '|' or ';'). Got values "
                f"{sorted(map(str, values.unique()))[:5]}."
            )
    if task not in ("binary", "multiclass"):
        return []
    col = target_columns[0]
    values = frame[col]
    classes = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values, 1) == 0):
        fractions = values[np.mod(values, 1) != 0]
        raise DataError(
            f"{path}: target column {col!r} holds non-integer floats, which is a regression "
            f"target, not {task!r} labels (e.g. {plain([fractions.iloc[0]])[0]!r}, line "
            f"{file_lines(fractions.index[:1])[0]})"
        )
    if task == "binary" and len(classes) != 2:
        raise DataError(
            f"{path}: target column {col!r} must hold exactly 2 classes for task 'binary'. "
            f"Got {len(classes)}: {plain(classes[:10])}."
        )
    if task == "multiclass" and len(classes) < 2:
        raise DataError(f"{path}: target column {col!r} holds a single class "
                        f"{plain(classes)}")
    text = [c for c in classes if not is_number(c)]
    if METRICS.get(metric).by_class_value and text:
        # text labels sort as text ("high" < "low" < "medium"), which is no rating order, and
        # have no values to weigh a disagreement by
        raise DataError(
            f"{path}: metric {metric!r} weighs a wrong class by how far its rating lies from "
            f"the right one, so target column {col!r} must hold numbers; got text labels "
            f"{plain(text[:5])}: write each as its rating (e.g. 0, 1, 2)"
        )
    if positive is not None:
        return _positive_last(plain(classes), task, positive, path, col)
    return plain(classes)  # Python scalars: the classes go to JSON and messages


# a rating scale longer than this is a continuous target, which QWK's one cell per pair of
# ratings does not fit (Kaggle's rating scales: 4-8 grades, essay scores up to ~60)
MAX_RATINGS = 100


def target_ratings(frame: pd.DataFrame, task: str, metric: str, target_columns: list[str],
                   path: Path) -> list[Any]:
    """The ratings of a regression scored by a metric of ordered ratings (QWK): the target's
    distinct values, sorted; a prediction is scored (and submitted) as the rating nearest to
    it, or as a tuned cut point places it. Empty for any other task or metric."""
    if task != "regression" or not METRICS.get(metric).by_class_value:
        return []
    if len(target_columns) != 1:
        raise DataError(f"metric {metric!r} scores one column of ratings; got target_columns "
                        f"{target_columns}")
    col = target_columns[0]
    ratings = np.unique(frame[col].to_numpy(dtype=np.float64))
    if len(ratings) > MAX_RATINGS:
        raise DataError(
            f"{path}: metric {metric!r} scores ratings, but target column {col!r} holds "
            f"{len(ratings)} distinct values (at most {MAX_RATINGS}): a continuous target "
            f"needs a metric of values (rmse, mae, ...)")
    if len(ratings) < 2:
        raise DataError(f"{path}: target column {col!r} holds a single rating "
                        f"{plain(ratings.tolist())}: there is nothing to predict")
    # whole ratings stay ints: the submission writes 3, not 3.0
    whole = np.all(np.mod(ratings, 1) == 0)
    return [int(v) for v in ratings] if whole else [float(v) for v in ratings]


def _zero_one(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and set(np.unique(values)) <= {0, 1}


def _tags(values: pd.Series, path: Path, col: str, separator: str) -> list[str]:
    """The labels of a multilabel target written as one column of labels joined by
    ``separator`` (:func:`pipeline.task_outputs.split_tags`): the task's classes, one 0/1
    column each."""
    tags = split_tags(values, separator)
    if empty := [i for i, row in zip(values.index, tags, strict=True) if not row]:
        raise DataError(f"{path}: target column {col!r} has {len(empty)} row(s) without a "
                        f"label (lines {file_lines(pd.Index(empty[:3]))})")
    doubled = [i for i, row in zip(values.index, tags, strict=True) if len(set(row)) < len(row)]
    if doubled:  # a label written twice is a typo or a column that is not a set of labels
        raise DataError(f"{path}: target column {col!r} repeats a label within a row (e.g. "
                        f"{values[doubled[0]]!r}, line {file_lines(pd.Index(doubled[:1]))[0]})")
    classes = tag_vocabulary(tags)
    if len(classes) < 2:
        raise DataError(f"{path}: target column {col!r} holds a single label {classes} in "
                        "every row: there is nothing to predict")
    return classes


def _positive_last(classes: list[Any], task: str, positive: Any, path: Path,
                   col: str) -> list[Any]:
    """The binary classes with ``positive`` (compared as written) second: the class whose
    probability the model predicts, the metric ranks and the sample's one column receives."""
    if task != "binary":
        raise DataError(f"'competition.positive_class' applies to task 'binary', not {task!r}")
    named = [c for c in classes if str(c) == str(positive)]
    if not named:
        raise DataError(f"{path}: 'competition.positive_class' {positive!r} is not a label of "
                        f"column {col!r}: its labels are {classes}")
    return [c for c in classes if c != named[0]] + named


def per_class_columns(columns: list[str], task: str, target_columns: list[str],
                      classes: list[Any]) -> list[int] | None:
    """The class (its index in ``classes``) of each of a sample submission's prediction
    ``columns`` when they are one column per class of a binary or multiclass task, in any
    order, named by the class ('cat', 'dog') or by the target and the class joined by '_'
    ('Status_C', 'Status_CL', 'Status_D' for target 'Status', as many Kaggle samples name
    them) or by any one prefix and the class ('Class_0'..'Class_8' for labels 0..8,
    'prob_cat'), in any letter case, or per label of a multilabel target written as one
    column of labels; None when they are not."""
    if task not in ("binary", "multiclass") and not (task == "multilabel" and classes):
        return None
    first, last = min(columns, default=""), max(columns, default="")  # their common prefix
    shared = first[:next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b),
                         min(len(first), len(last)))] if len(columns) > 1 else ""
    # the shared prefix, cut back while the class names share its end ('Class_1'..'Class_9'
    # as labels share 'Class_': the empty prefix matches those first)
    prefixes = ("", f"{target_columns[0]}_", *(shared[:k] for k in range(len(shared), 0, -1)))
    # the names as written first, then in other letter case ('class_1' for label 'Class_1',
    # as target columns match), where that leaves no two classes alike
    for fold in (str, str.casefold):
        wanted = [fold(c) for c in columns]
        for prefix in prefixes:
            named = [fold(f"{prefix}{c}") for c in classes]
            if len(set(named)) == len(named) and sorted(wanted) == sorted(named):
                return [named.index(c) for c in wanted]
    return None


def sample_targets(columns: list[str], target_columns: list[str]) -> list[str] | None:
    """The target each of a sample submission's prediction ``columns`` is filled from: its
    own name; the same names in other letter case ('Label' for train's 'label', as Kaggle's
    Digit Recognizer has them); or, with one target and one column, whatever the column is
    called (it can mean nothing else). None when they are none of these."""
    if sorted(columns) == sorted(target_columns):
        return list(columns)
    lower = {t.lower(): t for t in target_columns}
    if len(lower) == len(target_columns) and sorted(c.lower() for c in columns) == sorted(lower):
        return [lower[c.lower()] for c in columns]
    if len(columns) == 1 and len(target_columns) == 1:
        return list(target_columns)
    return None


def sample_columns_problem(columns: list[str], task: str, target_columns: list[str],
                           classes: list[Any], path: Path) -> str | None:
    """Why a sample submission with these prediction columns (its id left out) cannot be
    filled: they must be the target columns (:func:`sample_targets`), or one column per
    class of a binary or multiclass task (:func:`per_class_columns`), in any order
    (:func:`pipeline.submit.format_submission`). None when they fit."""
    class_columns = [str(c) for c in classes]
    if sample_targets(columns, target_columns) is not None or per_class_columns(
        columns, task, target_columns, classes
    ) is not None:
        return None
    if not class_columns:
        return f"{path}: columns {columns} are not the target columns {list(target_columns)}"
    if (odd := _odd_class_columns(columns, target_columns[0], class_columns)) is not None:
        unknown, lacking = odd
        return (f"{path}: column(s) {unknown} name no class of train's {target_columns[0]!r}"
                + (f", and class(es) {lacking} have no column" if lacking else "")
                + f" (its classes: {class_columns}): a class no train row holds cannot be "
                "predicted; the sample's other columns are one per class")
    return (f"{path}: columns {columns} match neither the target columns "
            f"{list(target_columns)} nor the classes {class_columns} (as such or as "
            f"{target_columns[0]}_<class>)")


def _odd_class_columns(columns: list[str], target: str,
                       classes: list[str]) -> tuple[list[str], list[str]] | None:
    """The sample's columns that name no class, and the classes without a column, where most
    of its columns name a class (as such or as ``<target>_<class>``, in any letter case): a
    class the sample lists but no train row holds (a probe's 12-class listings sample with
    one more column was refused as matching 'neither the target columns nor the classes',
    naming all 13). None where most columns name none."""
    for prefix in ("", f"{target}_"):
        named = {f"{prefix}{c}".casefold(): c for c in classes}
        unknown = [c for c in columns if c.casefold() not in named]
        if len(unknown) * 2 < len(columns):
            listed = {c.casefold() for c in columns}
            return unknown, [c for k, c in named.items() if k not in listed]
    return None


def check_sample_columns(columns: list[str], task: str, metric: str, target_columns: list[str],
                         classes: list[Any], path: Path, train_path: Path) -> None:
    """Refuse a sample submission (its prediction ``columns``) the submit stage cannot fill,
    or could fill only with text no scorer reads back (MAP@k labels holding spaces)."""
    problem = sample_columns_problem(columns, task, target_columns, classes, path)
    if problem:
        raise DataError(problem)
    top_k = METRICS.get(metric).top_k
    spaced = [c for c in classes if len(str(c).split()) != 1]
    if top_k and per_class_columns(columns, task, target_columns, classes) is None and spaced:
        raise DataError(
            f"{train_path}: metric {metric!r} is submitted as the {top_k} best labels "
            f"separated by spaces, but {len(spaced)} label(s) of column "
            f"{target_columns[0]!r} hold spaces (e.g. {plain(spaced[:3])}): the "
            "submission could not be read back"
        )
