"""Train rows that repeat another train row's inputs: folds that keep the copies apart (the
scheme's own split) against folds that keep them together, scored on held-out answers.

    python benchmarks/repeated_rows.py make DIR [--seed 0] [--copies 0.3] [--test-copies 0.0]
    python benchmarks/repeated_rows.py run DIR [--members lightgbm forest mlp] [--folds apart]
    python benchmarks/repeated_rows.py score DIR FILE [FILE ...]

``make`` writes a binary table: ``--rows`` distinct train rows and ``--test-rows`` distinct
test rows drawn from one logistic model (12 numeric columns, one interaction, one category of
20 values), then ``--copies`` of the train rows repeated one to three times (a rare class
padded, a user who posts twice: the copies keep their row's target), and ``--test-copies`` of
the test rows replaced by copies of train rows (a test set that shares rows with train).
``answers.csv`` keeps the test labels apart. ``copy_group`` in train.csv numbers each
distinct input (not a feature: the config names it the group column under ``together``).

``run`` trains each member with ``pipeline run`` under ``--folds apart`` (scheme
``stratified``: copies fall where the split puts them) or ``together`` (``stratified_group``
on ``copy_group``), blends them (``optuna``) and prints each run's CV beside its held-out
ROC AUC and log loss (a blend's CV: its nested CV's folds' mean).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import log_loss, roc_auc_score

ID, TARGET, GROUP = "row_id", "target", "copy_group"
MEMBERS = {
    "lightgbm": {"encoders": [{"name": "lightgbm", "params": {"n_jobs": 1}}]},
    "forest": {"encoders": [{"name": "sklearn:sklearn.ensemble.ExtraTreesClassifier",
                             "params": {"n_estimators": 300, "min_samples_leaf": 2}}]},
    "mlp": {"encoders": [{"name": "mlp"}]},
}


def make(out: Path, seed: int, rows: int, test_rows: int, copies: float,
         test_copies: float) -> None:
    """Write train.csv, test.csv, sample_submission.csv and answers.csv under ``out``."""
    rng = np.random.default_rng(seed)
    n = rows + test_rows
    x = rng.normal(size=(n, 12))
    category = rng.integers(0, 20, n)
    effect = rng.normal(0, 0.8, 20)
    logit = (-0.8 + 1.0 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3]
             + 0.5 * np.tanh(2 * x[:, 4]) + 0.3 * x[:, 5] + effect[category])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(x.round(4), columns=[f"x{j}" for j in range(12)])
    frame["shop"] = [f"s{c:02d}" for c in category]
    frame[TARGET] = y
    frame[GROUP] = np.arange(n)
    train, test = frame.iloc[:rows], frame.iloc[rows:].reset_index(drop=True)
    repeated = rng.choice(rows, int(copies * rows), replace=False)
    times = rng.integers(1, 4, len(repeated))
    train = pd.concat([train, train.iloc[np.repeat(repeated, times)]], ignore_index=True)
    if test_copies:
        swap = rng.choice(test_rows, int(test_copies * test_rows), replace=False)
        test.iloc[swap] = train.iloc[rng.choice(rows, len(swap))].to_numpy()
    train = train.iloc[rng.permutation(len(train))].reset_index(drop=True)
    train.insert(0, ID, [f"tr{i:06d}" for i in range(len(train))])
    test.insert(0, ID, [f"te{i:06d}" for i in range(len(test))])
    out.mkdir(parents=True, exist_ok=True)
    train.to_csv(out / "train.csv", index=False)
    test[[ID, TARGET]].to_csv(out / "answers.csv", index=False)
    test.drop(columns=[TARGET, GROUP]).to_csv(out / "test.csv", index=False)
    test[[ID]].assign(**{TARGET: 0.5}).to_csv(out / "sample_submission.csv", index=False)
    print(f"{out}: {len(train)} train rows ({len(train) - rows} copies), {len(test)} test "
          f"rows ({int(test_copies * test_rows)} of them train rows), {y[:rows].mean():.1%} "
          "positive")


def _config(data: Path, work: Path, member: str, folds: str) -> Path:
    together = folds == "together"
    cfg = {
        "name": f"{member}-{folds}", "output_dir": str(work / "runs"),
        "folds_dir": str(work / "folds"), "submissions_dir": str(work / "submissions"),
        "competition": {"dir": str(data), "id_column": ID, "target_columns": [TARGET],
                        "task": "binary", "metric": "roc_auc", "modality": "tabular",
                        "categorical_columns": ["shop"], "group_column": GROUP,
                        **({} if together else {"feature_columns": [
                            *(f"x{j}" for j in range(12)), "shop"]})},
        "folds": {"scheme": "stratified_group" if together else "stratified", "n_splits": 5,
                  "seed": 42},
        "model": MEMBERS[member], "train": {"seeds": [0]},
    }
    if not together:  # the group column would ask for a group scheme
        del cfg["competition"]["group_column"]
    path = work / "configs" / f"{member}-{folds}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pipeline", "--quiet", *args], check=True)


def run(data: Path, members: list[str], folds: str) -> None:
    """Train, blend and score every member under one folds arm."""
    work = data / "work"
    names = []
    for member in members:
        _cli("run", str(_config(data, work, member, folds)))
        names.append(f"{member}-{folds}")
    blend = f"blend-{folds}"
    _cli("blend", "--runs", *(str(work / "runs" / n) for n in names), "--method", "optuna",
         "--name", blend, "--blends-dir", str(work / "blends"))
    for name in names:  # a run's CV: the pooled OOF score
        cv = json.loads((work / "runs" / name / "scores.json").read_text())["scores"]["oof"]
        _report(data, name, cv, work / "runs" / name / "test.parquet")
    nested = json.loads((work / "blends" / blend / "cv.json").read_text())["nested"]["mean"]
    _report(data, blend, nested, work / "blends" / blend / "test.parquet")


def _report(data: Path, name: str, cv: float, test: Path) -> None:
    auc, loss = _held_out(data, test)
    print(json.dumps({"run": name, "cv": round(cv, 5), "held_auc": round(auc, 5),
                      "held_logloss": round(loss, 5)}))


def _held_out(data: Path, file: Path) -> tuple[float, float]:
    answers = pd.read_csv(data / "answers.csv", dtype={ID: str})
    pred = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    pred[ID] = pred[ID].astype(str)
    column = next(c for c in pred.columns if c not in (ID, "seed", "fold"))
    merged = answers.merge(pred.groupby(ID, as_index=False)[column].mean(), on=ID,
                           suffixes=("", "_p"))
    p = merged[f"{TARGET}_p" if f"{TARGET}_p" in merged else column].clip(1e-6, 1 - 1e-6)
    return roc_auc_score(merged[TARGET], p), log_loss(merged[TARGET], p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir", type=Path)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--rows", type=int, default=6000)
    mk.add_argument("--test-rows", type=int, default=6000)
    mk.add_argument("--copies", type=float, default=0.3)
    mk.add_argument("--test-copies", type=float, default=0.0)
    rn = sub.add_parser("run")
    rn.add_argument("dir", type=Path)
    rn.add_argument("--members", nargs="+", default=list(MEMBERS), choices=list(MEMBERS))
    rn.add_argument("--folds", choices=["apart", "together"], default="apart")
    sc = sub.add_parser("score")
    sc.add_argument("dir", type=Path)
    sc.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir, args.seed, args.rows, args.test_rows, args.copies, args.test_copies)
    elif args.command == "run":
        run(args.dir, args.members, args.folds)
    else:
        for file in args.files:
            auc, loss = _held_out(args.dir, file)
            print(f"{file}: held-out ROC AUC {auc:.5f}, log loss {loss:.5f}")


if __name__ == "__main__":
    main()
