"""High-cardinality categories for the GBDT members: native codes against target + count
encodings, on tables whose high-cardinality columns carry strong, weak or no signal, for
binary, regression and multiclass targets.

    python benchmarks/high_cardinality.py run OUT.jsonl [--seeds 0 1 2] [--libraries ...]
        [--tasks ...] [--signals ...] [--variants ...]
    python benchmarks/high_cardinality.py report OUT.jsonl

Each table is drawn in memory from its seed (reproducible): 30,000 rows, 20,000 to train (of
them 4,000 early-stop the trees, as a fold's rows do) and 10,000 held out. Columns: six
numbers (an interaction, a tanh, one of noise), ``region`` (8 levels, always with signal),
``state`` (60 levels, Zipf), ``product`` (500, uniform), ``shop`` (3,000, Zipf, 3% missing)
and ``device`` (8,000, uniform, never any signal: an id-like column). The signal of
``state``, ``product`` and ``shop`` is ``strong`` (effect sd 0.8-1.0 on the logit / value
scale, comparable to the numbers'), ``weak`` (0.3 of that) or ``none``. Multiclass: three
classes, each its own effects.

Variants (the category inputs; the fit is the pipeline's own code path, ``TreeFeatures`` +
``CategoryEncodings`` + ``build_estimator`` / ``fit_estimator`` at the GBDT defaults:
learning rate 0.05, up to 10,000 trees, patience 200, stopped on the metric):

- ``native``: every category as the library's native categorical codes (the default).
- ``te_all``: native codes plus ``model.tabular.encodings: [target, count]`` of every
  categorical column (cross-fitted target encoding).
- ``drop50`` / ``drop200``: columns with more than 50 / 200 distinct training values become
  target + count encodings *instead of* native codes; the others keep native codes.
- ``keep200``: native codes for all, plus target + count of the columns over 200 values.

Scores on the held-out rows: ROC AUC (binary), RMSE (regression), log loss (multiclass).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from pipeline.data.encodings import CategoryEncodings
from pipeline.models.gbdt import (
    TreeFeatures,
    build_estimator,
    fit_estimator,
    gbdt_settings,
    predict_output,
)

NUMERIC = [f"x{j}" for j in range(6)]
CATEGORIES = {"region": 8, "state": 60, "product": 500, "shop": 3000, "device": 8000}
SIGNAL = {"strong": 1.0, "weak": 0.3, "none": 0.0}
TASKS, VARIANTS = ("binary", "regression", "multiclass"), (
    "native", "te_all", "drop50", "drop200", "keep200")
METRIC = {"binary": "roc_auc", "regression": "rmse", "multiclass": "log_loss"}
ROWS, TRAIN, VALID = 30000, 20000, 4000


def _levels(rng: np.random.Generator, n: int, levels: int, zipf: float) -> np.ndarray:
    share = 1 / np.arange(1, levels + 1) ** zipf
    return rng.choice(levels, n, p=share / share.sum())


def make(task: str, signal: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The table (features) and its targets (class indices or values), from ``seed``."""
    rng = np.random.default_rng([seed, TASKS.index(task), list(SIGNAL).index(signal)])
    x = rng.normal(size=(ROWS, 6))
    codes = {"region": rng.integers(0, 8, ROWS), "state": _levels(rng, ROWS, 60, 0.8),
             "product": rng.integers(0, 500, ROWS), "shop": _levels(rng, ROWS, 3000, 1.0),
             "device": rng.integers(0, 8000, ROWS)}
    scale = {"region": 0.5, "state": 0.8 * SIGNAL[signal], "product": 0.8 * SIGNAL[signal],
             "shop": 1.0 * SIGNAL[signal], "device": 0.0}
    heads = 3 if task == "multiclass" else 1
    scores = np.zeros((ROWS, heads))
    for k in range(heads):
        w = rng.normal(0.7, 0.3, 5) * rng.choice([-1, 1], 5)
        scores[:, k] = (w[0] * x[:, 0] + w[1] * x[:, 1] + w[2] * x[:, 2] * x[:, 3]
                        + w[3] * np.tanh(2 * x[:, 4]))
        for name, levels in CATEGORIES.items():
            scores[:, k] += rng.normal(0, 1, levels)[codes[name]] * scale[name]
    if task == "binary":
        y = (rng.random(ROWS) < 1 / (1 + np.exp(-(scores[:, 0] - 1.2)))).astype(np.int64)
    elif task == "regression":
        y = scores[:, 0] + rng.normal(0, 1.0, ROWS)
    else:
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        y = (rng.random(ROWS)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).astype(np.int64)
    frame = pd.DataFrame(x.round(4), columns=NUMERIC)
    for name, c in codes.items():
        frame[name] = [f"{name[0]}{i}" for i in c]
    frame.loc[rng.random(ROWS) < 0.03, "shop"] = np.nan
    return frame, y


def _inputs(variant: str, task: str, seed: int, fit: pd.DataFrame, y_fit: np.ndarray,
            others: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The fit rows' and the other rows' input frames for ``variant``."""
    cats = list(CATEGORIES)
    if variant in ("native", "te_all"):
        enc = (CategoryEncodings(("target", "count"), task, 5, "auto", seed)
               if variant == "te_all" else None)
        features = TreeFeatures(NUMERIC, cats, encodings=enc)
        return [features.fit_transform(fit, y_fit, "lightgbm"),
                *(features.transform(o, "lightgbm") for o in others)]
    above = int(variant[4:])
    high = [c for c in cats if fit[c].nunique() > above]
    native = cats if variant.startswith("keep") else [c for c in cats if c not in high]
    features = TreeFeatures(NUMERIC, native)
    encoder = CategoryEncodings(("target", "count"), task, 5, "auto", seed)
    frames = [features.fit_transform(fit, y_fit, "lightgbm").reset_index(drop=True)]
    extra = [encoder.fit_transform(fit[high], y_fit)]
    for other in others:
        frames.append(features.transform(other, "lightgbm").reset_index(drop=True))
        extra.append(encoder.transform(other[high]))
    n = frames[0].shape[1]
    return [pd.concat([f, pd.DataFrame(e, columns=[f"f{n + j}" for j in range(e.shape[1])])],
                      axis=1) for f, e in zip(frames, extra, strict=True)]


def score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """ROC AUC (binary), RMSE (regression), log loss (multiclass) of ``pred``."""
    if task == "binary":
        return float(roc_auc_score(y, pred[:, 1]))
    if task == "regression":
        return float(np.sqrt(mean_squared_error(y, pred)))
    return float(log_loss(y, np.clip(pred, 1e-15, 1), labels=[0, 1, 2]))


def one(library: str, task: str, signal: str, seed: int, variant: str) -> dict[str, object]:
    """Fit one member on one table with one variant; its held-out score and trees."""
    frame, y = make(task, signal, seed)
    fit, valid, test = slice(0, TRAIN - VALID), slice(TRAIN - VALID, TRAIN), slice(TRAIN, ROWS)
    start = time.time()
    x_fit, x_valid, x_test = _inputs(variant, task, seed, frame.iloc[fit], y[fit],
                                     [frame.iloc[valid], frame.iloc[test]])
    settings = gbdt_settings(library, {"n_jobs": 1})
    est = build_estimator(settings, task, METRIC[task], "cpu", seed, [])
    trees = fit_estimator(est, settings, x_fit, y[fit], np.ones(len(x_fit)), x_valid, y[valid])
    pred = predict_output(est, library, x_test, trees, task == "regression")
    return {"library": library, "task": task, "signal": signal, "seed": seed,
            "variant": variant, "score": score(task, y[test], pred), "trees": trees,
            "seconds": round(time.time() - start, 1)}


def run(out: Path, args: argparse.Namespace) -> None:
    done = set()
    if out.exists():
        done = {tuple(r[k] for k in ("library", "task", "signal", "seed", "variant"))
                for r in map(json.loads, out.read_text().splitlines())}
    for seed in args.seeds:
        for library in args.libraries:
            for task in args.tasks:
                for signal in args.signals:
                    for variant in args.variants:
                        if (library, task, signal, seed, variant) in done:
                            continue
                        row = one(library, task, signal, seed, variant)
                        print(json.dumps(row), flush=True)
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")


def report(out: Path) -> None:
    """Per library, task and signal: ``native``'s mean score and its sd over the seeds (the
    seeds' spread), each variant's per-seed difference from ``native`` (positive: better)
    as mean [min, max] (seeds), and the median trees kept."""
    rows = pd.DataFrame(map(json.loads, out.read_text().splitlines()))
    for (library, task), group in rows.groupby(["library", "task"], sort=False):
        sign = 1 if task == "binary" else -1
        print(f"\n{library}, {task} ({METRIC[task]}, held-out)\n")
        variants = [v for v in VARIANTS if v in set(group.variant)]
        print("| signal | native (sd, seeds) | "
              + " | ".join(f"{v} vs native" for v in variants[1:]) + " | trees "
              + " / ".join(variants) + " |")
        print("|---" * (len(variants) + 2) + "|")
        for signal, cell in group.groupby("signal", sort=False):
            wide = cell.pivot(index="seed", columns="variant", values="score")
            trees = cell.groupby("variant").trees.median()
            base = wide["native"]
            parts = [f"{base.mean():.4f} ({base.std():.4f}, {base.count()})"]
            for v in variants[1:]:
                d = (sign * (wide[v] - base)).dropna() if v in wide else pd.Series([])
                parts.append(f"{d.mean():+.4f} [{d.min():+.4f}, {d.max():+.4f}] ({len(d)})"
                             if len(d) else "-")
            parts.append(" / ".join(f"{trees[v]:.0f}" if v in trees else "-"
                                    for v in variants))
            print(f"| {signal} | " + " | ".join(parts) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--libraries", nargs="+", default=["lightgbm", "xgboost"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--signals", nargs="+", default=list(SIGNAL), choices=list(SIGNAL))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    run(args.out, args) if args.command == "run" else report(args.out)


if __name__ == "__main__":
    main()
