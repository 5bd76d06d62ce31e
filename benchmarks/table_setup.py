"""A large table's fixed costs: the data work of ``pipeline run`` on a network member, all but
the training, against the same work written by hand with pandas and NumPy.

The table (seeded, written once into ``--work``): ``--rows`` train and ``--test-rows`` test
rows with text ids (``row0``, ...), 20 numeric columns (two with 5% missing cells) and three
categorical text columns of 5, 50 and 1,000 values, a binary target.

Pipeline arm, the functions ``pipeline run`` calls, in its order: the competition loaded and
checked; the folds made, written and read back; the unseen-category check; per fold the
encoder fitted on the training rows and written (``fold_prep``) and the train, validation and
test rows encoded (the network's datasets); the submission laid out from test predictions
(``format_submission``) and written. Hand arm: ``read_csv`` of the three files, scikit-learn's
``StratifiedKFold``; the categories' ``factorize`` codes over train and test at once; per
fold a median fill and standardisation of the numbers fitted on the training rows, and the
codes of values the training rows lack set to 0 (unknown), applied to the three parts;
predictions aligned to the sample's ids and written. Arms alternate, ``--rounds`` times;
printed: the median wall time of each phase and the ratio pipeline / hand.

Run: ``python benchmarks/table_setup.py [--rows 600000] [--test-rows 200000] [--folds 5]
[--rounds 3] [--work runs/table_setup]``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline.artifacts import write_csv
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.datasets import CompetitionDataset
from pipeline.data.tabular import unseen_shares
from pipeline.jobs.inputs import fold_prep
from pipeline.models.network import model_inputs
from pipeline.runs import fold_dir, load_folds, prepare_run_dir
from pipeline.submit import format_submission

NUMERIC = [f"f{i}" for i in range(20)]
CATEGORIES = {"c0": 5, "c1": 50, "c2": 1000}


def write_table(folder: Path, rows: int, test_rows: int) -> None:
    """train.csv, test.csv and sample_submission.csv of the benchmark's table."""
    rng = np.random.default_rng(0)

    def frame(n: int, start: int) -> pd.DataFrame:
        values = rng.normal(size=(n, len(NUMERIC))).astype(np.float32)
        out = pd.DataFrame(values, columns=NUMERIC)
        for column in ("f3", "f7"):
            out.loc[rng.random(n) < 0.05, column] = np.nan
        for column, k in CATEGORIES.items():
            out[column] = np.char.add("v", rng.integers(0, k, n).astype(str))
        out.insert(0, "id", np.char.add("row", np.arange(start, start + n).astype(str)))
        return out

    folder.mkdir(parents=True, exist_ok=True)
    train = frame(rows, 0)
    signal = train["f0"].fillna(0) + train["f1"] * train["f2"] + (train["c0"] == "v1")
    train["target"] = (signal + rng.normal(size=rows) > 0).astype(int)
    train.to_csv(folder / "train.csv", index=False)
    test = frame(test_rows, rows)
    test.to_csv(folder / "test.csv", index=False)
    test[["id"]].assign(target=0.5).to_csv(folder / "sample_submission.csv", index=False)


def pipeline_arm(data: Path, work: Path, folds: int) -> dict[str, float]:
    """The data work of ``pipeline run`` without the training, timed by phase."""
    cfg = build_config({
        "name": "table", "output_dir": str(work / "runs"), "folds_dir": str(work / "folds"),
        "submissions_dir": str(work / "subs"),
        "competition": {"dir": str(data), "id_column": "id", "target_columns": ["target"],
                        "task": "binary", "metric": "roc_auc", "modality": "tabular"},
        "folds": {"scheme": "stratified", "n_splits": folds, "seed": 42},
        "model": {"encoders": [{"name": "mlp", "params": {"hidden": [128]}}]},
    })
    times: dict[str, float] = {}
    start = time.perf_counter()
    comp = load_competition(cfg.competition)
    times["load"] = time.perf_counter() - start
    start = time.perf_counter()
    fold_ids = load_folds(cfg, comp)
    unseen_shares(comp.train, comp.test, comp.categorical_columns)
    meta = prepare_run_dir(cfg, comp)
    times["folds"] = time.perf_counter() - start
    start = time.perf_counter()
    for fold in range(folds):
        out = fold_dir(cfg, 0, fold)
        out.mkdir(parents=True, exist_ok=True)
        train_rows, valid_rows = np.flatnonzero(fold_ids != fold), np.flatnonzero(fold_ids == fold)
        prep = fold_prep(out, comp, train_rows, cfg.model.target_transform)
        inputs = model_inputs(comp, cfg.model, None, prep.tabular)
        y = prep.standardise("binary", comp.targets)
        for rows in (train_rows, valid_rows):
            CompetitionDataset(comp.train.iloc[rows], inputs, y[rows])
        CompetitionDataset(comp.test, inputs)
    times["per fold"] = time.perf_counter() - start
    start = time.perf_counter()
    test = pd.DataFrame({"id": comp.test["id"], "target": np.linspace(0, 1, len(comp.test))})
    submission = format_submission(meta, test, comp.sample_submission, work)
    write_csv(work / "subs" / "table.csv", submission)
    times["submission"] = time.perf_counter() - start
    return times


def hand_arm(data: Path, work: Path, folds: int) -> dict[str, float]:
    """The same data work as a competitor writes it with pandas and NumPy."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    train, test, sample = (pd.read_csv(data / f"{name}.csv")
                           for name in ("train", "test", "sample_submission"))
    times["load"] = time.perf_counter() - start
    start = time.perf_counter()
    y = train["target"].to_numpy()
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=42).split(y, y))
    times["folds"] = time.perf_counter() - start
    start = time.perf_counter()
    numbers = [f[NUMERIC].to_numpy(np.float32) for f in (train, test)]
    # category codes over train and test at once; per fold, values its training rows lack
    # become 0 (unknown)
    both = pd.concat([train[list(CATEGORIES)], test[list(CATEGORIES)]])
    codes = np.stack([pd.factorize(both[c])[0] for c in CATEGORIES], axis=1)
    train_codes, test_codes = codes[:len(train)], codes[len(train):]
    for train_rows, valid_rows in splits:
        fit = numbers[0][train_rows]
        median = np.nanmedian(fit, axis=0)
        filled = np.where(np.isnan(fit), median, fit)
        mean, std = filled.mean(0), filled.std(0) + 1e-12
        seen = [np.zeros(codes[:, j].max() + 2, bool) for j in range(len(CATEGORIES))]
        for j, known in enumerate(seen):
            known[train_codes[train_rows, j]] = True
        for x, c in ((fit, train_codes[train_rows]), (numbers[0][valid_rows],
                     train_codes[valid_rows]), (numbers[1], test_codes)):
            _ = (np.where(np.isnan(x), median, x) - mean) / std
            _ = np.stack([np.where(known[c[:, j]], c[:, j] + 1, 0)
                          for j, known in enumerate(seen)], axis=1)
    times["per fold"] = time.perf_counter() - start
    start = time.perf_counter()
    where = pd.Index(test["id"]).get_indexer(sample["id"])
    pred = np.linspace(0, 1, len(test))[where]
    out = work / "subs"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": sample["id"], "target": pred}).to_csv(out / "table.csv", index=False)
    times["submission"] = time.perf_counter() - start
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/table_setup"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = args.work / f"table_{args.rows}_{args.test_rows}"
    if not (data / "sample_submission.csv").is_file():
        write_table(data, args.rows, args.test_rows)
    arms: dict[str, Callable[..., dict[str, float]]] = {"pipeline": pipeline_arm,
                                                        "hand": hand_arm}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for round_ in range(args.rounds):
        order = list(arms) if round_ % 2 == 0 else list(arms)[::-1]
        for name in order:
            work = args.work / f"{name}_round"
            shutil.rmtree(work, ignore_errors=True)
            results[name].append(arms[name](data, work, args.folds))
            total = sum(results[name][-1].values())
            print(f"round {round_ + 1} {name}: {total:.2f} s", flush=True)
    _report(results, args)
    return 0


def _report(results: dict[str, list[dict[str, float]]], args: Any) -> None:
    print(f"\n{args.rows:,} train / {args.test_rows:,} test rows, {args.folds} folds, "
          f"{args.rounds} round(s), medians:")
    print(f"{'phase':12s} {'pipeline':>9s} {'hand':>9s} {'ratio':>7s}")
    phases = [*results["pipeline"][0], "total"]
    for phase in phases:
        medians = [statistics.median(sum(r.values()) if phase == "total" else r[phase]
                                     for r in results[name]) for name in ("pipeline", "hand")]
        print(f"{phase:12s} {medians[0]:8.2f}s {medians[1]:8.2f}s {medians[0] / medians[1]:7.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
