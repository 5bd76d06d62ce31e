"""Full fit (``train.full_fit``): the test predictions of the fold models' mean against a
model of every train row (``replace``) and the mean of the two (``average``), held out.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/full_fit.py [--seeds 0 1 2]

Tables (each split, seeded, into 70% train and 30% held-out answers):

- ``cancer``: binary, scikit-learn's ``load_breast_cancer`` (569 rows), log loss;
- ``digits``: multiclass, scikit-learn's ``load_digits`` (1,797 rows x 64 pixels), log loss;
- ``friedman``: regression, scikit-learn's ``make_friedman1`` (3,000 rows, noise 1), RMSE.

Members: ``lightgbm`` with the toolkit's defaults (one thread) and ``mlp`` with its tabular
recipe (20 epochs, the best epoch predicts). One run per (table, member, seed) with
``train.full_fit: true`` and 5 folds: the three arms are read from its files (the folds'
test predictions ``test_folds.parquet``, the full model's ``seed<s>/full/test.parquet``)
and scored on the answers, so they share the fold models. The seed draws the split, the
folds and the models. ``--together``: one run per (table, member, split) training every seed
on the split and folds of each ``--splits`` seed: the mean of the seeds' full models against
all their fold models (3 against 15 with 3 seeds and 5 folds).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("PIPELINE_PROGRESS", "0")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_ALBUMENTATIONS_UPDATE"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, make_friedman1  # noqa: E402

from pipeline import train  # noqa: E402
from pipeline.competition import load_competition  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.full_fit_predictions import combine  # noqa: E402
from pipeline.metrics import get_metric  # noqa: E402
from pipeline.task_outputs import encode_targets  # noqa: E402

TABLES = {"cancer": ("binary", "log_loss"), "digits": ("multiclass", "log_loss"),
          "friedman": ("regression", "rmse")}
MEMBERS = {"lightgbm": {"name": "lightgbm", "params": {"n_jobs": 1}}, "mlp": {"name": "mlp"}}
ARMS = ("folds", "replace", "average")


def table(name: str) -> pd.DataFrame:
    """The table's feature columns ``f0..`` and target ``y``."""
    if name == "friedman":
        x, y = make_friedman1(n_samples=3000, noise=1.0, random_state=0)
    else:
        x, y = (load_breast_cancer if name == "cancer" else load_digits)(return_X_y=True)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["y"] = y
    frame.insert(0, "id", [f"r{i:05d}" for i in range(len(frame))])
    return frame


def write_competition(root: Path, name: str, seed: int) -> pd.DataFrame:
    """train.csv / test.csv / sample_submission.csv under ``root``; returns the answers."""
    frame = table(name)
    held = np.random.default_rng(seed).random(len(frame)) < 0.3
    root.mkdir(parents=True, exist_ok=True)
    frame[~held].to_csv(root / "train.csv", index=False)
    frame[held].drop(columns="y").to_csv(root / "test.csv", index=False)
    frame[held][["id", "y"]].assign(y=0).to_csv(root / "sample_submission.csv", index=False)
    return frame[held].reset_index(drop=True)


def run_one(out: Path, name: str, member: str, seed: int,
            train_seeds: list[int] | None = None) -> dict[str, Any]:
    """One run's three arms; ``train_seeds`` (``--together``): one run of these training
    seeds (the full models' mean against every seed's fold models), split by ``seed``."""
    task, metric = TABLES[name]
    seeds = train_seeds or [seed]
    comp_dir = out / f"{name}_s{seed}"
    answers = write_competition(comp_dir, name, seed)
    cfg = build_config({
        "name": f"{name}-{member}-s{seed}", "output_dir": str(out / "runs"),
        "folds_dir": str(out / "folds"), "submissions_dir": str(out / "submissions"),
        "competition": {"dir": str(comp_dir), "id_column": "id", "target_columns": ["y"],
                        "task": task, "metric": metric, "modality": "tabular"},
        "folds": {"scheme": "kfold" if task == "regression" else "stratified",
                  "n_splits": 5, "seed": seed},
        "model": {"encoders": [MEMBERS[member]]},
        "train": {"seeds": seeds, "full_fit": True},
    })
    start = time.perf_counter()
    cv = train.run(cfg)
    seconds = time.perf_counter() - start
    comp = load_competition(cfg.competition)
    cols, run = comp.pred_columns, cfg.run_dir
    per_fold = pd.read_parquet(run / "test_folds.parquet")
    folds_mean = per_fold.groupby("id")[cols].mean().loc[answers["id"]].to_numpy()
    full_pred = np.mean([pd.read_parquet(run / f"seed{s}" / "full" / "test.parquet").set_index(
        "id").loc[answers["id"], cols].to_numpy() for s in seeds], axis=0)
    y = (answers["y"].to_numpy(dtype=np.float64)[:, None] if task == "regression" else
         encode_targets(answers, task, ["y"], comp.classes))
    score = get_metric(metric)
    preds = {"folds": folds_mean, "replace": full_pred,
             "average": combine(folds_mean, full_pred, "average")}
    length = json.loads((run / f"seed{seeds[0]}" / "full" / "metrics.json").read_text())[
        "length"]
    return {"table": name, "member": member, "seed": seed, "cv": cv, "seconds": seconds,
            "length": length, **{arm: float(score(y, p)) for arm, p in preds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=list(TABLES))
    parser.add_argument("--members", nargs="+", default=list(MEMBERS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/full_fit_bench"))
    parser.add_argument("--together", action="store_true",
                        help="one run per (table, member, split) training every seed: the "
                             "seeds' full models against all their fold models")
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="--together: the split (and folds) seeds (default: the first seed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.out, ignore_errors=True)
    rows = []
    for name in args.tables:
        for member in args.members:
            for seed in (args.splits or args.seeds[:1]) if args.together else args.seeds:
                rows.append(run_one(args.out, name, member, seed,
                                    args.seeds if args.together else None))
                print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    print("\n| table | member | metric | CV | folds' mean | replace | average | full length "
          "(per seed) | s/run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, member), part in frame.groupby(["table", "member"], sort=False):
        lengths = " / ".join(str(next(iter(v.values()))).strip("[]") for v in part["length"])
        arms = " | ".join(f"{part[a].mean():.4f}" for a in ARMS)
        print(f"| {name} | {member} | {TABLES[name][1]} | {part['cv'].mean():.4f} | {arms} | "
              f"{lengths} | {part['seconds'].mean():.0f} |")
    print("\nper seed (folds / replace / average):")
    for row in rows:
        print(f"{row['table']} {row['member']} s{row['seed']}: " + " / ".join(
            f"{row[a]:.4f}" for a in ARMS))


if __name__ == "__main__":
    main()
