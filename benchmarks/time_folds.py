"""Folds ordered in time (``folds.scheme: time``) against shuffled folds, on tables whose
test rows lie after the train rows and whose target drifts: how far each scheme's CV is from
the score on the later test period.

Three generated competitions, each with a date column (ISO text, read by the pipeline as
days since 1970 and its calendar parts: a feature in every arm):

- ``sales`` (regression, RMSE): 400 train days of 10 rows, the next 100 days as test. The
  target is a sum of row features (two linear, one through a sine, a store's effect), a
  weekly cycle, a level that walks randomly from day to day with a slow upward trend, and a
  coefficient of ``x3`` that grows from 0 to 1.5 over the days.
- ``trend`` (regression, RMSE): as ``sales`` without the random walk: the level rises by
  0.01 a day with a yearly cycle, a drift a model can learn and CV can measure.
- ``default`` (binary, ROC AUC): 24 train months of 250 applications, the next 6 months as
  test. The log-odds hold two linear features, a coefficient of ``x3`` that turns from +1
  to -1 over the months, ``x4`` whose mean and effect shift, and a month's own level that
  walks randomly.

Each arm runs the pipeline itself (folds -> train -> blend -> submit) with 5 folds: member
``lightgbm`` with the toolkit's defaults (one thread), a linear member (Ridge, or
LogisticRegression for ``default``), and their Optuna blend (100 trials) fitted on the
OOF the scheme gives; the CV is the OOF score (the blend's nested CV), the held-out score the
submission's on the test period's answers (the mean of the fold models that predict the
test: under time folds all but the last block's). Seeds draw the table, the folds and the
models.

Run: ``python benchmarks/time_folds.py [--seeds 0 1 2] [--out /tmp/time_folds_bench]``
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from pipeline import blend, folds, submit, train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.demo import heldout_score

SCHEMES = ("kfold", "stratified", "time")


def sales(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows (with the target) of the regression table."""
    days, test_days, per_day = 400, 100, 10
    total = days + test_days
    day = np.repeat(np.arange(total), per_day)
    n = len(day)
    store_effect = rng.normal(0, 1, 20)
    level = np.cumsum(rng.normal(0, 0.1, total)) + 0.004 * np.arange(total)
    frame = pd.DataFrame({
        "date": (pd.Timestamp("2022-01-01") + pd.to_timedelta(day, unit="D")).strftime(
            "%Y-%m-%d"),
        "store": rng.integers(0, 20, n),
        **{f"x{i}": rng.normal(size=n) for i in range(1, 5)},
    })
    frame["y"] = (2 * frame["x1"] + np.sin(2 * frame["x2"]) + store_effect[frame["store"]]
                  + level[day] + 0.5 * np.sin(2 * np.pi * day / 7)
                  + 1.5 * day / days * frame["x3"] + rng.normal(0, 0.5, n))
    frame["store"] = "s" + frame["store"].astype(str)
    return _split(frame, day < days)


def trend(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows (with the target) of the smoothly drifting regression table."""
    days, test_days, per_day = 400, 100, 10
    day = np.repeat(np.arange(days + test_days), per_day)
    n = len(day)
    store_effect = rng.normal(0, 1, 20)
    frame = pd.DataFrame({
        "date": (pd.Timestamp("2022-01-01") + pd.to_timedelta(day, unit="D")).strftime(
            "%Y-%m-%d"),
        "store": rng.integers(0, 20, n),
        **{f"x{i}": rng.normal(size=n) for i in range(1, 5)},
    })
    frame["y"] = (2 * frame["x1"] + np.sin(2 * frame["x2"]) + store_effect[frame["store"]]
                  + 0.01 * day + 0.8 * np.sin(2 * np.pi * day / 365.25)
                  + 0.5 * np.sin(2 * np.pi * day / 7)
                  + 1.5 * day / days * frame["x3"] + rng.normal(0, 0.5, n))
    frame["store"] = "s" + frame["store"].astype(str)
    return _split(frame, day < days)


def default(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows (with the target) of the binary table."""
    months, test_months, per_month = 24, 6, 250
    total = months + test_months
    month = np.repeat(np.arange(total), per_month)
    n = len(month)
    start = pd.Timestamp("2020-01-01") + pd.DateOffset(months=0)
    dates = pd.to_datetime([start + pd.DateOffset(months=int(m)) for m in month]) \
        + pd.to_timedelta(rng.integers(0, 28, n), unit="D")
    share = month / months  # 0 at the first month, 1 at the first test month
    level = np.cumsum(rng.normal(0, 0.15, total))
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"),
                          **{f"x{i}": rng.normal(size=n) for i in range(1, 4)}})
    frame["x4"] = rng.normal(share, 1)  # its values drift up
    logit = (-1.5 + 1.2 * frame["x1"] - 0.8 * frame["x2"] + (1 - 2 * share) * frame["x3"]
             + 0.6 * np.tanh(frame["x4"]) * (1 + share) + level[month])
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return _split(frame, month < months)


def _split(frame: pd.DataFrame, in_train: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame.insert(0, "id", [f"r{i:06d}" for i in range(len(frame))])
    # train rows in no time order, as a competition's file may hold them
    train = frame[in_train].sample(frac=1.0, random_state=0).reset_index(drop=True)
    return train, frame[~in_train].reset_index(drop=True)


TABLES = {"sales": (sales, "regression", "rmse"), "trend": (trend, "regression", "rmse"),
          "default": (default, "binary", "roc_auc")}
LINEAR = {"regression": "sklearn:sklearn.linear_model.Ridge",
          "binary": "sklearn:sklearn.linear_model.LogisticRegression"}


def write_competition(folder: Path, table: str, seed: int) -> None:
    make, _, _ = TABLES[table]
    train_rows, test_rows = make(np.random.default_rng(seed))
    folder.mkdir(parents=True, exist_ok=True)
    train_rows.to_csv(folder / "train.csv", index=False)
    test_rows.drop(columns=["y"]).to_csv(folder / "test.csv", index=False)
    test_rows[["id"]].assign(y=0).to_csv(folder / "sample_submission.csv", index=False)
    test_rows[["id", "y"]].to_csv(folder / "answers.csv", index=False)


def config(out: Path, table: str, seed: int, scheme: str, member: str) -> dict[str, Any]:
    _, task, metric = TABLES[table]
    competition: dict[str, Any] = {
        "dir": str(out / f"{table}_s{seed}"), "id_column": "id", "target_columns": ["y"],
        "task": task, "metric": metric, "modality": "tabular"}
    if scheme == "time":
        competition["time_column"] = "date"
    return {
        "name": f"{table}-s{seed}-{scheme}-{member}", "output_dir": str(out / "runs"),
        "folds_dir": str(out / "folds"), "submissions_dir": str(out / "submissions"),
        "competition": competition,
        "folds": {"scheme": scheme, "n_splits": 5, "seed": seed},
        "model": {"encoders": [{"name": "lightgbm", "params": {"n_jobs": 1,
                                                                "random_state": seed}}
                               if member == "lightgbm" else {"name": LINEAR[task]}]},
        "train": {"seeds": [seed]},
    }


def run_member(out: Path, table: str, seed: int, scheme: str,
               member: str) -> tuple[Path, dict[str, Any]]:
    """Train one member; its run folder and CV, held-out and last-fold scores."""
    data = config(out, table, seed, scheme, member)
    path = out / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    folds.run(cfg, comp)
    cv = float(train.run(cfg, comp))
    held = heldout_score(path, submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir))
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    last = scores[f"seed{seed}/fold{cfg.folds.n_splits - 1}"]
    row = {f"{member}_cv": cv, f"{member}_held": held, f"{member}_last": last,
           f"{member}_fold_held": fold_models_heldout(cfg.run_dir, Path(data["competition"]["dir"]),
                                                      TABLES[table][2])}
    if member == "lightgbm" and scheme == "time" and TABLES[table][1] == "regression":
        row.update(edge_errors(cfg.run_dir, Path(data["competition"]["dir"])))
    return cfg.run_dir, row


def fold_models_heldout(run_dir: Path, folder: Path, metric: str) -> list[float]:
    """The held-out score of each fold model alone (test_folds.parquet), fold 0 first (under
    time folds, the last one never trained on the latest block), then that of the mean of
    every fold's predictions (what the run's test.parquet held before time folds left the
    last out)."""
    per_fold = pd.read_parquet(run_dir / "test_folds.parquet").merge(
        pd.read_csv(folder / "answers.csv"), on="id", suffixes=("", "_true"))
    score = ((lambda t, p: float(np.sqrt(np.mean((t - p) ** 2)))) if metric == "rmse"
             else roc_auc_score)
    every = per_fold.groupby("id")[["y", "y_true"]].mean()
    return [*(score(f["y_true"].to_numpy(), f["y"].to_numpy())
              for _, f in per_fold.groupby("fold")),
            score(every["y_true"].to_numpy(), every["y"].to_numpy())]


def run_arm(out: Path, table: str, seed: int, scheme: str) -> dict[str, Any]:
    """Both members and their blend under one scheme."""
    start = time.perf_counter()
    row: dict[str, Any] = {"table": table, "seed": seed, "scheme": scheme}
    runs = []
    for member in ("lightgbm", "linear"):
        run_dir, scores = run_member(out, table, seed, scheme, member)
        runs.append(run_dir)
        row.update(scores)
    name = f"{table}-s{seed}-{scheme}-blend"
    folder = blend.run(runs, method="optuna", name=name, n_trials=100, seed=seed,
                       blends_dir=out / "blends", submissions_dir=out / "submissions")
    cv = json.loads((folder / "cv.json").read_text())
    weights = json.loads((folder / "weights.json").read_text())["weights"]
    sub = submit.run(folder, name, out / "submissions")
    row.update(blend_cv=cv["nested"]["pooled"],
               blend_held=heldout_score(out / f"{table}-s{seed}-{scheme}-lightgbm.yaml", sub),
               lightgbm_weight=weights[runs[0].name])
    print(f"{table} s{seed} {scheme}: fold models held-out (then all folds' mean) " +
          " / ".join(f"{v:.4f}" for v in row["lightgbm_fold_held"]) + ", " + ", ".join(
        f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)) +
        f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return row


EDGE_DAYS = 7


def edge_errors(run_dir: Path, folder: Path) -> dict[str, float]:
    """OOF RMSE of the rows within EDGE_DAYS of a day their fold model trained on, and of
    the rest: what a gap (rows dropped from training beside each validation block) would
    purge. Near rows scoring no better than the rest leave a gap nothing to remove."""
    oof = pd.read_parquet(run_dir / "oof.parquet").merge(
        pd.read_csv(folder / "train.csv")[["id", "date", "y"]], on="id", suffixes=("", "_true"))
    day = (pd.to_datetime(oof["date"]) - pd.Timestamp("1970-01-01")).dt.days.to_numpy()
    distance = np.empty(len(oof))
    for k in np.unique(oof["fold"]):
        mine = (oof["fold"] == k).to_numpy()
        trained = np.unique(day[~mine])
        at = np.clip(np.searchsorted(trained, day[mine]), 1, len(trained) - 1)
        distance[mine] = np.minimum(np.abs(day[mine] - trained[at - 1]),
                                    np.abs(day[mine] - trained[at]))
    error = (oof["y"] - oof["y_true"]).to_numpy()
    near = distance <= EDGE_DAYS
    return {"near": float(np.sqrt(np.mean(error[near] ** 2))),
            "far": float(np.sqrt(np.mean(error[~near] ** 2))), "near_share": float(near.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--out", type=Path, default=Path("/tmp/time_folds_bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.out, ignore_errors=True)
    rows = []
    for table in args.tables:
        for seed in args.seeds:
            write_competition(args.out / f"{table}_s{seed}", table, seed)
            rows += [run_arm(args.out, table, seed, scheme) for scheme in SCHEMES]
    frame = pd.DataFrame(rows)
    frame.drop(columns=[c for c in frame if c.endswith("_fold_held")]).to_csv(
        args.out / "results.csv", index=False)
    print("\n| table (metric) | scheme | arm | CV | held-out | CV - held-out (per seed) | "
          "abs gap |\n|---|---|---|---|---|---|---|")
    for (table, scheme), arm in frame.groupby(["table", "scheme"], sort=False):
        for member in ("lightgbm", "linear", "blend"):
            gap = arm[f"{member}_cv"] - arm[f"{member}_held"]
            per_seed = " / ".join(f"{g:+.4f}" for g in gap)
            print(f"| {table} ({TABLES[table][2]}) | {scheme} | {member} | "
                  f"{arm[f'{member}_cv'].mean():.4f} | {arm[f'{member}_held'].mean():.4f} | "
                  f"{gap.mean():+.4f} ({per_seed}) | {gap.abs().mean():.4f} |")
    print("\n| table | scheme | lightgbm's blend weight (per seed) | last fold alone - "
          "held-out (lightgbm) | each lightgbm fold model's held-out, folds 0..4 (mean of "
          "seeds) | held-out of the run (per seed) | of all five folds' mean (per seed) |"
          "\n|---|---|---|---|---|---|---|")
    for (table, scheme), arm in frame.groupby(["table", "scheme"], sort=False):
        weights = " / ".join(f"{w:.2f}" for w in arm["lightgbm_weight"])
        last = (arm["lightgbm_last"] - arm["lightgbm_held"]).mean()
        held = np.stack(arm["lightgbm_fold_held"].to_list())
        per_fold, every = held[:, :-1].mean(axis=0), held[:, -1]
        run = " / ".join(f"{v:.4f}" for v in arm["lightgbm_held"])
        print(f"| {table} | {scheme} | {arm['lightgbm_weight'].mean():.2f} ({weights}) | "
              f"{last:+.4f} | {' / '.join(f'{v:.4f}' for v in per_fold)} | "
              f"{arm['lightgbm_held'].mean():.4f} ({run}) | {every.mean():.4f} "
              f"({' / '.join(f'{v:.4f}' for v in every)}) |")
    if "near" in frame:
        edges = frame.dropna(subset=["near"])
        print(f"\ntime folds, OOF RMSE within {EDGE_DAYS} days of a training day / the rest "
              "(per seed): " + ", ".join(f"{r.near:.4f} / {r.far:.4f} ({r.near_share:.0%} near)"
                                         for r in edges.itertuples()))


if __name__ == "__main__":
    main()
