"""Blend quality on held-out data the blender never saw, and Optuna tuning speed.

Members are scikit-learn models on datasets shipped with scikit-learn (digits: 10 classes,
breast cancer: binary). For each repeat, a stratified 70/30 split: members get 5-fold OOF
predictions on the 70% part and predict the 30% part with the average of their fold models
(as in a competition). Blenders are fit on the OOF only and scored on the 30% part.

Run: ``python benchmarks/blend_quality.py [--repeats 3] [--trials 300]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from pipeline.ensemble import OptunaBlender, build_blender
from pipeline.metrics import get_metric

METHODS = ("mean", "best member", "optuna", "hill_climb", "rank", "power", "stacking")


def members() -> dict[str, Any]:
    """Twelve diverse classifiers, from strong to deliberately weak."""
    scaled = lambda model: make_pipeline(StandardScaler(), model)  # noqa: E731
    return {
        "logreg": scaled(LogisticRegression(C=1.0, max_iter=2000)),
        "logreg_c0.01": scaled(LogisticRegression(C=0.01, max_iter=2000)),
        "knn5": scaled(KNeighborsClassifier(5)),
        "knn25": scaled(KNeighborsClassifier(25)),
        "naive_bayes": GaussianNB(),
        "random_forest": RandomForestClassifier(300, n_jobs=2, random_state=0),
        "extra_trees": ExtraTreesClassifier(300, n_jobs=2, random_state=0),
        "hist_gbm": HistGradientBoostingClassifier(max_iter=150, random_state=0),
        "svc": scaled(CalibratedClassifierCV(SVC(), ensemble=False)),
        "tree_depth6": DecisionTreeClassifier(max_depth=6, random_state=0),
        "mlp": scaled(MLPClassifier((64,), max_iter=500, random_state=0)),
        "lda": LinearDiscriminantAnalysis(),
    }


def member_predictions(
    x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """OOF ``(m, n, c)`` on 70%, held-out ``(m, n', c)`` on 30%, their targets and folds."""
    x_tr, x_ho, y_tr, y_ho = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    folds = np.zeros(len(y_tr), dtype=np.int64)
    splits = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(x_tr, y_tr))
    for k, (_, val) in enumerate(splits):
        folds[val] = k
    n_classes = len(np.unique(y))
    binary = n_classes == 2
    oofs, held = [], []
    for model in members().values():
        oof = np.zeros((len(y_tr), n_classes))
        ho_parts = []
        for train, val in splits:
            fitted = clone(model).fit(x_tr[train], y_tr[train])
            oof[val] = fitted.predict_proba(x_tr[val])
            ho_parts.append(fitted.predict_proba(x_ho))
        ho = np.mean(ho_parts, axis=0)
        oofs.append(oof[:, 1:] if binary else oof)  # binary: P(positive) only
        held.append(ho[:, 1:] if binary else ho)
    encode = (lambda t: t.astype(np.float64)[:, None]) if binary else (lambda t: t)
    names = list(members())
    return np.stack(oofs), np.stack(held), encode(y_tr), encode(y_ho), folds, names


def run_methods(
    metric_name: str, data: tuple, n_trials: int, seed: int
) -> dict[str, tuple[float, float, float]]:
    """Held-out score, in-sample OOF score and fit+predict seconds of every method."""
    oof, held, y_tr, y_ho, folds, _ = data
    metric = get_metric(metric_name)
    out = {}
    for method in METHODS:
        start = time.perf_counter()
        if method == "best member":
            scores = np.array([metric(y_tr, p) for p in oof])
            best = int(np.argmax(scores) if metric.greater_is_better else np.argmin(scores))
            in_sample, prediction = scores[best], held[best]
        else:
            params: dict[str, Any] = {}
            if method in ("optuna", "hill_climb"):
                params = {"metric": metric_name, "seed": seed}
            if method == "optuna":
                params["n_trials"] = n_trials
            blender = build_blender(method, **params).fit(oof, y_tr, folds)
            in_sample, prediction = metric(y_tr, blender.oof_), blender.predict(held)
        out[method] = (metric(y_ho, prediction), in_sample, time.perf_counter() - start)
    return out


def speed(n_members: int = 20, n_rows: int = 100_000, n_trials: int = 300) -> dict[str, float]:
    """Seconds to tune ``n_members`` x ``n_rows`` binary members for ``n_trials`` trials (AUC)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n_rows).astype(np.float64)[:, None]
    qualities = np.linspace(0.2, 1.0, n_members)
    preds = np.stack(
        [1 / (1 + np.exp(-(q * (2 * y - 1) + rng.normal(size=y.shape)))) for q in qualities]
    )
    times = {}
    for label, storage in (("in memory", None), ("SQLite", "sqlite:///:memory:")):
        start = time.perf_counter()
        OptunaBlender(metric="roc_auc", n_trials=n_trials, storage=storage).fit(preds, y)
        times[label] = time.perf_counter() - start
    return times


def table(results: dict[str, dict[str, list[tuple[float, float, float]]]]) -> str:
    """Markdown table: mean held-out score, ratio vs equal weights, in-sample score, seconds."""
    lines = [
        "| task (metric, direction) | method | held-out | vs equal weights | in-sample OOF "
        "| fit s |",
        "|---|---|---|---|---|---|",
    ]
    for task, by_method in results.items():
        equal = np.mean([r[0] for r in by_method["mean"]])
        for method, runs in by_method.items():
            held, ins, secs = (float(np.mean(v)) for v in zip(*runs, strict=True))
            label = "equal weights (mean)" if method == "mean" else method
            lines.append(
                f"| {task} | {label} | {held:.4f} | {held / equal:.4f} | {ins:.4f} | {secs:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run the quality comparison and the speed test; print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="70/30 splits averaged")
    parser.add_argument("--trials", type=int, default=300, help="Optuna trials")
    args = parser.parse_args()
    loaders: dict[str, Callable[..., Any]] = {
        "digits": load_digits,
        "breast_cancer": load_breast_cancer,
    }
    tasks = [("digits", "log_loss"), ("digits", "accuracy"), ("breast_cancer", "roc_auc")]
    results: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for seed in range(args.repeats):
        cache = {}
        for dataset, metric in tasks:
            if dataset not in cache:
                x, y = loaders[dataset](return_X_y=True)
                cache[dataset] = member_predictions(x, y, seed)
            direction = get_metric(metric).direction[:3]
            key = f"{dataset} ({metric}, {direction})"
            scores = run_methods(metric, cache[dataset], args.trials, seed)
            for method, value in scores.items():
                results.setdefault(key, {}).setdefault(method, []).append(value)
            print(
                f"repeat {seed} {key}: " + ", ".join(f"{m} {v[0]:.4f}" for m, v in scores.items()),
                flush=True,
            )
    print(f"\n{len(members())} members, {args.repeats} repeats, {args.trials} Optuna trials\n")
    print(table(results))
    times = speed(n_trials=args.trials)
    print(
        f"\nOptuna, 20 members x 100,000 rows x {args.trials} trials (roc_auc): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    )


if __name__ == "__main__":
    main()
