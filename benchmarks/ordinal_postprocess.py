"""QWK post-processing on ordered classes: cut points on the expected class against the
argmax and against per-class weights, each tuned on half of the rows' OOF probabilities and
scored on the other half (both ways, several seeds); and a regression on the ratings
(``task: regression, metric: qwk``), rounded to the nearest rating against tuned cut points,
beside the classifier's best rule.

    python benchmarks/ordinal_postprocess.py [--seeds 5] [--classes 5 8]

Data: scikit-learn's ``load_diabetes`` (442 rows), its disease-progression target cut into
``--classes`` quantile ratings; OOF probabilities (5 stratified folds) of a logistic
regression and of HistGradientBoosting, OOF values of a ridge regression and of
HistGradientBoosting's regressor on the same folds. Prints the held-out QWK of each rule and
the ratio of the tuned rule's to the argmax's (the nearest rating's).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from pipeline.ensemble import fit_postprocess
from pipeline.metrics import get_metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--classes", type=int, nargs="+", default=[5, 8])
    args = parser.parse_args()
    qwk = get_metric("qwk")
    weights_only = dataclasses.replace(qwk, by_class_value=False)  # the rule before cuts
    x, target = load_diabetes(return_X_y=True)
    models = {"logistic regression": LogisticRegression(max_iter=2000),
              "HistGradientBoosting": HistGradientBoostingClassifier(max_iter=100,
                                                                     learning_rate=0.05)}
    print("| ratings | model | argmax | class weights | tuned (cuts where better) | "
          "tuned / argmax |")
    print("|---|---|---|---|---|---|")
    for k in args.classes:
        y = pd.qcut(target, k, labels=False)
        for name, model in models.items():
            scores = []
            for seed in range(args.seeds):
                p = cross_val_predict(model, x, y, method="predict_proba", cv=StratifiedKFold(
                    5, shuffle=True, random_state=seed))
                order = np.random.default_rng(seed).permutation(len(y))
                halves = order[: len(y) // 2], order[len(y) // 2:]
                for fit, held in (halves, halves[::-1]):
                    argmax = qwk(y[held], np.eye(k)[p[held].argmax(axis=1)])
                    weights = fit_postprocess("multiclass", weights_only, y[fit], p[fit])
                    tuned = fit_postprocess("multiclass", qwk, y[fit], p[fit])
                    assert weights is not None and tuned is not None
                    scores.append((argmax, weights.evaluate(y[held], p[held], qwk),
                                   tuned.evaluate(y[held], p[held], qwk)))
            a, w, t = np.mean(scores, axis=0)
            print(f"| {k} | {name} | {a:.4f} | {w:.4f} | {t:.4f} | {t / a:.3f} |")
    regression(x, target, args)


def regression(x: np.ndarray, target: np.ndarray, args: argparse.Namespace) -> None:
    """The regression rows: OOF values of the ratings (1..k), scored as the nearest rating
    and with cut points tuned on the other half, beside the classifier's tuned rule."""
    models = {"ridge / logistic": (Ridge(alpha=1.0), LogisticRegression(max_iter=2000)),
              "HistGradientBoosting": (
                  HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05),
                  HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05))}
    print("\n| ratings | model | classifier, tuned | regression, nearest rating | "
          "regression, tuned cuts | tuned / nearest |")
    print("|---|---|---|---|---|---|")
    for k in args.classes:
        labels = pd.qcut(target, k, labels=False)
        ratings = labels + 1.0  # the train file's ratings 1..k
        qwk, valued = get_metric("qwk"), get_metric("qwk", list(range(1, k + 1)))
        for name, (regressor, classifier) in models.items():
            scores = []
            for seed in range(args.seeds):
                cv = StratifiedKFold(5, shuffle=True, random_state=seed)
                folds = list(cv.split(x, labels))
                v = cross_val_predict(regressor, x, ratings, cv=folds)[:, None]
                p = cross_val_predict(classifier, x, labels, method="predict_proba", cv=folds)
                order = np.random.default_rng(seed).permutation(len(labels))
                halves = order[: len(labels) // 2], order[len(labels) // 2:]
                for fit, held in (halves, halves[::-1]):
                    y = ratings[:, None]
                    rule = fit_postprocess("regression", valued, y[fit], v[fit])
                    best = fit_postprocess("multiclass", qwk, labels[fit], p[fit])
                    assert rule is not None and best is not None
                    scores.append((best.evaluate(labels[held], p[held], qwk),
                                   valued(y[held], v[held]),
                                   rule.evaluate(y[held], v[held], valued)))
            c, n, t = np.mean(scores, axis=0)
            print(f"| {k} | {name} | {c:.4f} | {n:.4f} | {t:.4f} | {t / n:.3f} |")


if __name__ == "__main__":
    main()
