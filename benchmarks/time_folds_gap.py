"""Would a purged gap help time folds? Blocked time folds (``TimeBlockKFold``, as
``folds.scheme: time``) with the train rows within ``gap`` days of each validation block
dropped from that fold's training, against no gap: how far each CV is from the held-out score
of the later test period, on the regression tables of ``benchmarks/time_folds.py``.

LightGBM as the pipeline's member fits it (10,000 trees at rate 0.05, early stopping after
200 rounds on the fold's validation rows, one thread) on the rows' features, the store as a
category and the date as days and its calendar parts; the held-out score is that of the
mean of folds 0..3 (the folds that trained on the latest block). Outside the pipeline, to
sweep the gap quickly; the pipeline's own ``folds.gap`` gave the same scores to the fourth
digit (``trend`` seed 0: gap 0 CV 0.9603 / held-out 1.2704, gap 7 0.9794 / 1.2530).

Run: ``python benchmarks/time_folds_gap.py [--seeds 0 1 2] [--gaps 0 7 21]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_folds import TABLES

from pipeline.data.time_folds import TimeBlockKFold

N_SPLITS = 5


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    when = pd.to_datetime(frame["date"])
    out = frame[["x1", "x2", "x3", "x4"]].assign(
        store=frame["store"].astype("category"),
        day=(when - pd.Timestamp("1970-01-01")).dt.days,
        year=when.dt.year, month=when.dt.month, dom=when.dt.day,
        dow=when.dt.day_of_week, doy=when.dt.day_of_year)
    return out


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def run(table: str, seed: int, gap: int) -> tuple[float, float]:
    """CV and held-out RMSE of time folds with ``gap`` days purged beside each block."""
    train, test = TABLES[table][0](np.random.default_rng(seed))
    x, y = _features(train), train["y"].to_numpy()
    x_test = _features(test)
    x_test["store"] = pd.Categorical(test["store"], categories=x["store"].cat.categories)
    day = x["day"].to_numpy()
    oof, test_pred = np.empty(len(y)), []
    splits = TimeBlockKFold(N_SPLITS).split(x, groups=day)
    for k, (fit_rows, valid) in enumerate(splits):
        low, high = day[valid].min() - gap, day[valid].max() + gap
        fit_rows = fit_rows[(day[fit_rows] < low) | (day[fit_rows] > high)]
        model = lgb.LGBMRegressor(n_estimators=10000, learning_rate=0.05, n_jobs=1,
                                  random_state=seed, verbose=-1)
        model.fit(x.iloc[fit_rows], y[fit_rows], eval_X=(x.iloc[valid],), eval_y=(y[valid],),
                  callbacks=[lgb.early_stopping(200, verbose=False)])
        oof[valid] = model.predict(x.iloc[valid])
        if k < N_SPLITS - 1:
            test_pred.append(model.predict(x_test))
    return _rmse(y, oof), _rmse(test["y"].to_numpy(), np.mean(test_pred, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gaps", type=int, nargs="+", default=[0, 7, 21])
    parser.add_argument("--tables", nargs="+", default=["sales", "trend"])
    args = parser.parse_args()
    print("| table | gap (days) | CV | held-out | CV - held-out (per seed) |")
    print("|---|---|---|---|---|")
    for table in args.tables:
        for gap in args.gaps:
            scores = np.array([run(table, seed, gap) for seed in args.seeds])
            diff = scores[:, 0] - scores[:, 1]
            print(f"| {table} | {gap} | {scores[:, 0].mean():.4f} | {scores[:, 1].mean():.4f} | "
                  f"{diff.mean():+.4f} ({' / '.join(f'{d:+.4f}' for d in diff)}) |", flush=True)


if __name__ == "__main__":
    main()
