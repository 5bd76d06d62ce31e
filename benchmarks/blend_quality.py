"""Blend quality on held-out data the blender never saw, and Optuna tuning speed.

Members are scikit-learn models on datasets shipped with scikit-learn (digits: 10 classes,
breast cancer: binary). For each repeat, a stratified 70/30 split: members get 5-fold OOF
predictions on the 70% part and predict the 30% part with the average of their fold models
(as in a competition). Blenders are fit on the OOF only and scored on the 30% part.

With ``--demo``: the same comparison through the pipeline stages on the tabular demo
competition (``pipeline.demo``, breast cancer, ROC AUC). Ten members are trained by
``pipeline.train`` on the demo config's folds, blended by ``pipeline.blend``, written by
``pipeline.submit`` and scored on the demo's held-out ``answers.csv``, which no member or
blender sees. Everything goes under ``--work`` (default ``runs/blend_bench``).

Run: ``python benchmarks/blend_quality.py [--repeats 3] [--trials 300]``
or ``python benchmarks/blend_quality.py --demo [--trials 300] [--work runs/blend_bench]``
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
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
DEMO_BLENDERS = ("mean", "optuna", "hill_climb", "rank", "power", "stacking")


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


# --demo: pipeline members on the tabular demo competition ---------------------------------

_MLP_TRAIN = {
    "epochs": 40, "batch_size": 64,
    "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0e-4},
    "scheduler": {"name": "cosine", "warmup_epochs": 2, "min_lr_ratio": 0.01},
    "loss": {"name": "bce"},
}


def _sklearn(path: str, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"encoders": [{"name": f"sklearn:{path}", "params": params}]}, {"seeds": [0]}


def _mlp(hidden: list[int], dropout: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    model = {
        "encoders": [{"name": "mlp", "params": {"hidden": hidden, "dropout": dropout}}],
        "head": {"dropout": dropout, "hidden": 0},
    }
    return model, {"seeds": [seed], **copy.deepcopy(_MLP_TRAIN)}


def demo_members() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Ten members as ``(model, train)`` config sections, from strong to deliberately weak.

    scikit-learn members get no scaling from the pipeline, so the logistic regressions use
    the Newton-Cholesky solver, which converges on the raw features; the MLPs get the
    pipeline's standardised inputs.
    """
    return {
        "mlp_wide": _mlp([256, 128], 0.1, seed=0),
        "mlp_narrow": _mlp([32], 0.3, seed=1),
        "logreg_c0.1": _sklearn(
            "sklearn.linear_model.LogisticRegression", C=0.1, solver="newton-cholesky"
        ),
        "logreg_c10": _sklearn(
            "sklearn.linear_model.LogisticRegression", C=10.0, solver="newton-cholesky"
        ),
        "random_forest": _sklearn("sklearn.ensemble.RandomForestClassifier", n_estimators=300),
        "extra_trees": _sklearn("sklearn.ensemble.ExtraTreesClassifier", n_estimators=300),
        "hist_gbm": _sklearn(
            "sklearn.ensemble.HistGradientBoostingClassifier",
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
        ),
        "knn15": _sklearn("sklearn.neighbors.KNeighborsClassifier", n_neighbors=15),
        "naive_bayes": _sklearn("sklearn.naive_bayes.GaussianNB"),
        "tree_depth4": _sklearn("sklearn.tree.DecisionTreeClassifier", max_depth=4),
    }


def run_demo(work: Path, n_trials: int) -> None:
    """Train the members, blend them with every method, score everything on held-out rows."""
    import yaml

    from pipeline import blend, submit, train
    from pipeline.config import build_config
    from pipeline.demo import build_demo, heldout_score

    work = work.resolve()
    demo_config = build_demo(work / "data", work / "configs", demos=("tabular",))["tabular"]
    base = yaml.safe_load(demo_config.read_text())
    metric = get_metric(base["competition"]["metric"])
    better = max if metric.greater_is_better else min
    submissions = work / "submissions"

    members: dict[str, dict[str, Any]] = {}
    for name, (model, train_section) in demo_members().items():
        data = {
            **copy.deepcopy(base), "name": f"bench-{name}", "model": model, "train": train_section,
            "output_dir": str(work / "runs"), "folds_dir": str(work / "folds"),
            "submissions_dir": str(submissions),
        }
        path = work / "configs" / f"bench_{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cfg = build_config(data, str(path))
        start = time.perf_counter()
        oof = train.run(cfg)
        seconds = time.perf_counter() - start
        sub = submit.run(cfg.run_dir, f"bench-{name}", submissions)
        held = heldout_score(path, sub)
        members[name] = {"run": cfg.run_dir, "oof": oof, "held": held, "s": seconds}
        print(f"member {name}: OOF {oof:.4f}, held-out {held:.4f}, {seconds:.1f} s", flush=True)

    rows: dict[str, dict[str, Any]] = {}
    best = better(members, key=lambda n: members[n]["oof"])
    rows[f"best member ({best})"] = {
        "in": members[best]["oof"], "nested": None, "held": members[best]["held"], "s": 0.0,
    }
    runs = [m["run"] for m in members.values()]
    for method in DEMO_BLENDERS:
        name = f"bench-{method}"
        shutil.rmtree(work / "blends" / name, ignore_errors=True)  # time a fresh fit
        start = time.perf_counter()
        folder = blend.run(
            runs, method=method, name=name, blends_dir=work / "blends", n_trials=n_trials
        )
        seconds = time.perf_counter() - start
        cv = json.loads((folder / "cv.json").read_text())
        held = heldout_score(demo_config, submit.run(folder, name, submissions))
        rows[method] = {
            "in": cv["in_sample"]["score"], "nested": cv["nested"], "held": held, "s": seconds,
        }
        print(f"blend {method}: held-out {held:.4f}, {seconds:.1f} s", flush=True)

    equal = rows["mean"]["held"]
    folds = base["folds"]
    print(
        f"\n{len(members)} members, {folds['n_splits']} {folds['scheme']} folds "
        f"(seed {folds['seed']}), {n_trials} Optuna trials, {metric.name} "
        f"({metric.direction})\n"
    )
    lines = [
        "| method | in-sample OOF | nested CV pooled | nested CV mean | held-out "
        "| vs equal weights (held-out) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        label = "equal weights (mean)" if method == "mean" else method
        nested = r["nested"]
        pooled, mean = (
            (f"{nested['pooled']:.4f}", f"{nested['mean']:.4f}") if nested else ("-", "-")
        )
        lines.append(
            f"| {label} | {r['in']:.4f} | {pooled} | {mean} | {r['held']:.4f} "
            f"| {r['held'] / equal:.4f} | {r['s']:.1f} |"
        )
    print("\n".join(lines))
    print("\n| member | OOF | held-out | train s |\n|---|---|---|---|")
    for name, m in members.items():
        print(f"| {name} | {m['oof']:.4f} | {m['held']:.4f} | {m['s']:.1f} |")


def main() -> None:
    """Run the quality comparison and the speed test; print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="70/30 splits averaged")
    parser.add_argument("--trials", type=int, default=300, help="Optuna trials")
    parser.add_argument(
        "--demo", action="store_true",
        help="blend pipeline members on the tabular demo competition instead",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("runs/blend_bench"),
        help="scratch folder of --demo (demo data, configs, runs, blends, submissions)",
    )
    args = parser.parse_args()
    if args.demo:
        run_demo(args.work, args.trials)
        return
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
