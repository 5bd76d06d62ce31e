"""Test rows from a later period than every train row: the split a forecasting competition
makes (sales, demand, prices, traffic), which random folds do not.

Random (or stratified) folds validate each model on rows from inside the period it trained
on; the test rows lie after it. Where the target trends or drifts, the CV then overstates the
score on the test period (a helper measured CV RMSE 1.9 against 7.9 on the later test rows of
a trending table), and a blend tuned on that OOF favours the members that interpolate. The
folds stage says so when it writes the folds, naming the date column and what to do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.competition import Competition

_LATER_SHARE = 0.9  # test rows after every train date, for the test to be a later period


def later_test_warning(comp: Competition, held_out: bool) -> str | None:
    """The warning for a test file whose rows mostly come after every train row's date (a
    date column the competition read as dates: its ``:year`` part beside it), or None.
    ``held_out``: the folds already hold periods out (blocks of time, or groups: a period
    column, perhaps): nothing is said then."""
    if held_out:
        return None
    for column in comp.written_numbers:
        if f"{column}:year" not in comp.train.columns or column not in comp.test.columns:
            continue
        train = comp.train[column].dropna()
        test = comp.test[column].dropna()
        if train.empty or test.empty:
            continue
        last = float(train.max())
        later = float((test > last).mean())
        if later < _LATER_SHARE:
            continue
        return (f"folds: {later:.0%} of the test rows come after the last train date in "
                f"column {column!r} (train up to {_day(last)}, test from {_day(test.min())}): "
                "these folds validate on rows inside the training period, so the CV "
                "overstates the score on a later one where the target trends or drifts; to "
                f"validate on unseen periods, set 'competition.time_column: {column}' with "
                "'folds.scheme: time' (contiguous blocks of time, each validated once)")
    return None


def _day(days: float) -> str:
    """Days since 1970 (how a date column is read) as the date."""
    return str((pd.Timestamp("1970-01-01") + pd.to_timedelta(np.floor(days), unit="D")).date())
