"""Folds ordered in time (``folds.scheme: time``): k contiguous blocks of the rows' order in
``competition.time_column``, each validated once, for a competition whose test rows lie
after its train rows (sales, credit default over months, traffic).

A shuffled split validates each fold on rows interleaved in time with its training rows:
where the target drifts, the CV overstates the score on a later period, and the blender
tunes its weights on that optimistic OOF. A block of time held out whole is validated as a
period the model has not seen.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator

from pipeline.competition import Competition
from pipeline.competition_files import date_format
from pipeline.errors import DataError

_KEY = "'competition.time_column'"


class TimeBlockKFold(BaseCrossValidator):
    """K-fold over contiguous blocks of time: the distinct times (``groups``) in order, cut
    into ``n_splits`` blocks of about equal row counts; block k is fold k's validation rows.

    Every row is validated exactly once, so every train row gets one out-of-fold prediction,
    which the blender and the CV score read. That is why this is not forward chaining
    (scikit-learn's ``TimeSeriesSplit``, each fold trained on the blocks before it alone):
    there the first block is never validated and has no OOF prediction, and each fold's
    model trains on a different share of the rows. Here a middle block trains on the blocks
    on both sides of it; it is still validated as a period of its own, and the last block
    is validated exactly as the test is, on the period after all its training rows.

    Rows sharing one time (one day's sales) always fall in one block: a cut lies only
    between two distinct times. There is no shuffling and no seed: the order decides.

    Example:
        >>> times = [3, 1, 1, 2, 5, 4, 4, 6]
        >>> [t.tolist() for _, t in TimeBlockKFold(3).split(np.zeros((8, 1)), groups=times)]
        [[1, 2, 3], [0, 5, 6], [4, 7]]
    """

    def __init__(self, n_splits: int = 5) -> None:
        self.n_splits = n_splits

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits

    def _iter_test_indices(self, X: Any = None, y: Any = None,
                           groups: Any = None) -> Iterator[np.ndarray]:
        if groups is None:
            raise ValueError("The 'groups' parameter of TimeBlockKFold must hold each row's "
                             "time. Got None.")
        codes, _ = pd.factorize(np.asarray(groups), sort=True)  # distinct times in order
        if (codes < 0).any():
            raise ValueError("The 'groups' parameter of TimeBlockKFold must hold a time in "
                             f"every row. Got {int((codes < 0).sum())} missing.")
        block = time_blocks(np.bincount(codes), self.n_splits)[codes]
        for k in range(self.n_splits):
            yield np.flatnonzero(block == k)


def time_blocks(counts: np.ndarray, n_splits: int) -> np.ndarray:
    """The block of each distinct time, given the rows at each (``counts``, in time order):
    the j-th cut falls between the two distinct times nearest to j/n_splits of the rows,
    leaving at least one distinct time to every later block.

    Example:
        >>> time_blocks(np.array([5, 1, 1, 1, 5, 1]), 3).tolist()
        [0, 1, 1, 1, 2, 2]
    """
    n_times = len(counts)
    if n_times < n_splits:
        raise ValueError(f"The 'n_splits' parameter of TimeBlockKFold must be at most the "
                         f"number of distinct times ({n_times}). Got {n_splits}.")
    ends = np.cumsum(counts)  # rows up to and including each time
    cuts: list[int] = []  # index of the last time of blocks 0..n_splits-2
    first = 0
    for j in range(1, n_splits):
        last = n_times - (n_splits - j)  # exclusive: the later blocks need a time each
        ideal = j * ends[-1] / n_splits
        cut = first + int(np.argmin(np.abs(ends[first:last] - ideal)))
        cuts.append(cut)
        first = cut + 1
    return np.searchsorted(np.asarray(cuts), np.arange(n_times), side="left")


def competition_times(comp: Competition, test: bool = False) -> pd.Series:
    """The times of the train (or ``test``) rows in ``competition.time_column``, as numbers
    or dates (a date column the competition read as days since 1970 comes back as dates).

    Raises:
        DataError: a train row without a time, or a value that is neither a number nor a
            date (one line naming the file and column).
    """
    cfg = comp.cfg
    column, file = cfg.time_column, cfg.test_file if test else cfg.train_file
    assert column, "competition_times needs 'competition.time_column'"
    frame = comp.test if test else comp.train
    path = Path(cfg.dir) / file
    values = frame[column]
    empty = values.isna()
    if test:
        values = values[~empty]
    elif empty.any():
        ids = comp.train.loc[empty, cfg.id_column].head(3).tolist()
        raise DataError(f"{path}: column {column!r} ({_KEY}) has {int(empty.sum())} empty "
                        f"value(s) (ids {ids}): a row without a time has no place in the "
                        "time order")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if column in comp.written_numbers and f"{column}:year" in frame.columns:
            return pd.Timestamp("1970-01-01") + pd.to_timedelta(values, unit="D")
        return values.astype(np.float64)
    return _parse_times(values, column, path)


def _parse_times(values: pd.Series, column: str, path: Path) -> pd.Series:
    """Text times as numbers when every one is a number, else as dates; one parse per
    distinct value (a year of daily rows holds 365)."""
    text = values.astype(str).str.strip()
    distinct = pd.Series(text.unique())
    numbers = pd.to_numeric(distinct, errors="coerce")
    if numbers.notna().all():
        parsed = numbers.astype(np.float64)
    elif (proven := _proven_dates(distinct)) is not None:  # day and month as values prove
        # as the competition reads a date feature: a format guessed from the first value
        # ('09/01/2021' as September) and each other value parsed on its own ('13/01/2021'
        # as January) put 23 of 60 day-first dates out of order
        parsed = proven
    else:
        # one format guessed from the first value (fast); the rest each on its own. What
        # parses to no date is refused below, so pandas' warnings of its guesses say nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(distinct, errors="coerce", utc=True)
            again = parsed.isna()
            if again.any():
                parsed[again] = pd.to_datetime(distinct[again], errors="coerce", utc=True,
                                               format="mixed")
        parsed = parsed.dt.tz_localize(None)
    bad = distinct[parsed.isna()]
    if len(bad):
        raise DataError(f"{path}: column {column!r} ({_KEY}) holds {len(bad)} value(s) that "
                        f"are neither numbers nor dates, e.g. {bad.head(3).tolist()}: write "
                        "the times as numbers or dates (2021-03-04)")
    return pd.Series(text.map(dict(zip(distinct, parsed, strict=True))).to_numpy(),
                     index=values.index)


def _proven_dates(distinct: pd.Series) -> pd.Series | None:
    """``distinct`` text dates in the one format their values prove (``25/12/21`` day first,
    its year in two digits), or None where none does."""
    written = date_format(distinct)
    for form in (written, written.replace("%Y", "%y")) if written else ():
        parsed = pd.to_datetime(distinct, format=form, errors="coerce", utc=True)
        if parsed.notna().all():
            return parsed.dt.tz_localize(None)
    return None


def training_rows(comp: Competition, folds: np.ndarray, fold: int, gap: float) -> np.ndarray:
    """The rows fold ``fold`` trains on: those of the other folds, less (``gap`` > 0,
    ``folds.gap``) those within ``gap`` time units (days, for dates) of its block's first
    and last time. A block's edge rows otherwise validate a model that trained on their
    neighbours on both sides, where the test period has the train period on one side only:
    on a trending table a 7-day gap took the CV's optimism from 0.397 to 0.345 RMSE, a
    21-day gap to 0.239 (docs/benchmarks.md).

    Raises:
        DataError: the gap leaves the fold no rows to train on.
    """
    rows = np.flatnonzero(folds != fold)
    if not gap:
        return rows
    times = competition_times(comp)
    if pd.api.types.is_datetime64_any_dtype(times):  # days, the unit of a gap between dates
        times = (times - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    at = times.to_numpy(dtype=np.float64)
    block = at[folds == fold]
    near = (at[rows] >= block.min() - gap) & (at[rows] <= block.max() + gap)
    if near.all():
        raise DataError(f"'folds.gap' {gap:g} leaves fold {fold} no rows to train on: every "
                        f"row of the other folds lies within {gap:g} of its block in column "
                        f"{comp.cfg.time_column!r}; lower it")
    return rows[~near]


def check_time_blocks(path: Path, comp: Competition, folds: np.ndarray) -> None:
    """Refuse a time folds file whose folds are no longer blocks of the train rows' times in
    fold order (the times edited since it was made, or a file made otherwise): fold k would
    then validate on rows between or after its training rows' times, or share a time with
    them, which the scheme promises not to do."""
    column = comp.cfg.time_column
    spans = pd.Series(competition_times(comp).to_numpy()).groupby(folds).agg(["min", "max"])
    ends, starts = spans["max"].to_numpy()[:-1], spans["min"].to_numpy()[1:]
    if (broken := np.flatnonzero(ends >= starts)).size:
        k = int(spans.index[broken[0]])
        raise DataError(
            f"folds file {path}: its folds are not blocks of column {column!r} "
            f"('competition.time_column') in fold order: fold {k} ends at "
            f"{_shown(ends[broken[0]])}, fold {k + 1} starts at {_shown(starts[broken[0]])}. "
            f"Delete it (and {path.with_suffix('.json').name}) to rebuild it, or set "
            "'folds.name'")


def time_folds_summary(times: pd.Series, folds: np.ndarray) -> str:
    """Each fold's period, for the log: 'fold 0 2020-01-01..2020-02-11 (120 rows), ...'."""
    frame = pd.DataFrame({"time": times.to_numpy(), "fold": folds})
    spans = frame.groupby("fold")["time"].agg(["min", "max", "size"])
    return ", ".join(f"fold {k} {_shown(r['min'])}..{_shown(r['max'])} ({r['size']} rows)"
                     for k, r in spans.iterrows())


def _shown(value: Any) -> str:
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    return f"{value:g}"


_SHARED_PERIOD = 0.5  # test rows after the last train time, below which the test is no later


def shared_period_warning(comp: Competition) -> str | None:
    """The warning for time folds on a test whose rows mostly lie inside the train period
    (a random split of the same months), or None: validating every fold on a period of its
    own then asks more of the models than the test does, and the blend is tuned for it."""
    column = comp.cfg.time_column
    if not column or column not in comp.test.columns:
        return None
    try:
        train, test = competition_times(comp), competition_times(comp, test=True)
    except DataError:  # the test file's times are no input of the folds
        return None
    if test.empty or type(train.iloc[0]) is not type(test.iloc[0]):
        return None
    later = float((test > train.max()).mean())
    if later >= _SHARED_PERIOD:
        return None
    return (f"folds: 'folds.scheme: time' validates each fold on a period of its own, but "
            f"only {later:.0%} of the test rows come after the last train time in column "
            f"{column!r} ({_KEY}): where the test shares the train period, this CV is "
            "pessimistic and the blend is tuned to extrapolate; a shuffled scheme (stratified "
            "or kfold, without 'competition.time_column') validates as the test does")
