"""The tuned blenders' objective under ROC AUC: the folds' mean against the pooled OOF.

    python benchmarks/fold_mean_objective.py rare WORK --tables rare_s3 rare_s4 [--trials 300]
    python benchmarks/fold_mean_objective.py offline [--repeats 5] [--trials 300]

``rare``: the members already trained in ``WORK/runs/<table prefix>-*`` (see
``benchmarks/rare_positives.py``; a table ``rare_s3`` holds runs named ``r3-*``) are blended
by ``pipeline blend`` with ``optuna`` and ``hill_climb`` under ``objective`` ``pooled`` and
``fold_mean``, each written by ``pipeline submit`` and scored on the table's kept-back
answers. It prints, per table and blend, the held-out ROC AUC, the nested CV (folds' mean)
and the weights; each member's held-out score too.

``offline``: scikit-learn's breast cancer (569 rows, 37% positive: not rare) with the twelve
members of ``benchmarks/blend_quality.py`` (5-fold OOF on a stratified 70%, the fold models'
mean on the other 30%), repeated over split seeds: held-out ROC AUC of each blender under
each objective.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

OBJECTIVES = ("pooled", "fold_mean")
METHODS = ("optuna", "hill_climb")


def rare(work: Path, tables: list[str], trials: int) -> None:
    """Blend each table's members under both objectives; print held-out scores."""
    from rare_positives import ID, TARGET, answers

    from pipeline import blend, submit
    from pipeline.artifacts import read_json

    work = work.resolve()
    os.chdir(work)  # the runs name their competition folder relative to where they ran
    for table in tables:
        data = work / "data" / table
        runs = sorted((work / "runs").glob(f"r{table.rsplit('_s', 1)[1]}-*"))
        runs = [r for r in runs if (r / "test.parquet").is_file()]
        print(f"== {table}: {len(runs)} members")
        for run in runs:
            test = pd.read_parquet(run / "test.parquet")
            scores = read_json(run / "scores.json")["scores"]
            folds = np.mean([v for k, v in scores.items() if "/fold" in k])
            held = roc_auc_score(answers(data, test[ID]), test[TARGET])
            print(f"  {run.name:24s} held-out {held:.4f} | pooled CV {scores['oof']:.4f} "
                  f"folds' mean {folds:.4f}")
        for method in METHODS:
            for objective in OBJECTIVES:
                name = f"{table}-{method}-{objective}"
                folder = blend.run(runs, method=method, name=name, blends_dir=work / "blends",
                                   n_trials=trials, params={"objective": objective},
                                   submissions_dir=work / "submissions", overwrite=True)
                csv = submit.run(folder, name, work / "submissions")
                sub = pd.read_csv(csv)
                held = roc_auc_score(answers(data, sub[ID]), sub[TARGET])
                cv = read_json(folder / "cv.json")
                weights = read_json(folder / "weights.json")["weights"]
                shown = " ".join(f"{k.split('-', 1)[1]}={v:.2f}" for k, v in weights.items())
                print(f"  {method:10s} {objective:9s} held-out {held:.4f} | nested folds' "
                      f"mean {cv['nested']['mean']:.4f} pooled {cv['nested']['pooled']:.4f} "
                      f"| {shown}")


def offline(repeats: int, trials: int) -> None:
    """Breast cancer: held-out ROC AUC of optuna and hill_climb under each objective."""
    from blend_quality import member_predictions
    from sklearn.datasets import load_breast_cancer

    from pipeline.ensemble import build_blender

    x, y = load_breast_cancer(return_X_y=True)
    results: dict[tuple[str, str], list[float]] = {}
    for seed in range(repeats):
        oof, held, y_tr, y_ho, folds, _ = member_predictions(x, y, seed)
        for method in METHODS:
            for objective in OBJECTIVES:
                params = {"metric": "roc_auc", "seed": seed, "objective": objective}
                if method == "optuna":
                    params["n_trials"] = trials
                blender = build_blender(method, **params).fit(oof, y_tr, folds)
                score = roc_auc_score(y_ho[:, 0], blender.predict(held)[:, 0])
                results.setdefault((method, objective), []).append(score)
                print(f"seed {seed} {method:10s} {objective:9s} held-out {score:.5f}")
    for (method, objective), scores in results.items():
        print(f"{method:10s} {objective:9s} mean held-out {np.mean(scores):.5f} "
              f"({' '.join(f'{s:.4f}' for s in scores)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_rare = sub.add_parser("rare")
    p_rare.add_argument("work", type=Path)
    p_rare.add_argument("--tables", nargs="+", required=True)
    p_rare.add_argument("--trials", type=int, default=300)
    p_off = sub.add_parser("offline")
    p_off.add_argument("--repeats", type=int, default=5)
    p_off.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    if args.command == "rare":
        rare(args.work, args.tables, args.trials)
    else:
        offline(args.repeats, args.trials)


if __name__ == "__main__":
    main()
