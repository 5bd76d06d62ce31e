"""A blend used downstream: its in-sample OOF against its out-of-fold (nested) one.

A blend's weights are fitted on the members' OOF, so the OOF blended with those weights is
scored on the labels it was tuned on. Downstream, a second blend that takes the first as a
member, or a table that compares its score with a single run's, reads that OOF as if it
were any run's. This measures, on synthetic binary competitions whose test labels are known:

- one blend: its in-sample OOF score, its nested CV (each fold blended with weights fitted
  on the other folds) and its score on 20,000 labelled test rows the blender never saw;
- a blend of a blend: blend ``inner`` = tuned on members m0..m{k-1}, then ``outer`` = tuned
  on ``inner`` + the remaining members, once with ``inner`` publishing its in-sample OOF
  (the stage before this change) and once its nested (held-out) OOF; the inner blend's
  weight in the outer one and the outer blend's held-out score, beside one flat blend of
  every member.

Members: ``sigmoid(q_i * (2y - 1) + a * shared + noise_i)``: a shared noise term makes the
inner members correlated, as models of one family are; the outer members carry their own.

Run: ``python benchmarks/nested_blends.py [--repeats 6] [--rows 500] [--method optuna]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.ensemble import build_blender, nested_cv
from pipeline.metrics import get_metric

N_TEST, N_FOLDS = 20_000, 5
# inner members: close in quality and correlated; outer members: weaker but diverse
INNER_Q = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.3, 0.2, 0.0)
OUTER_Q = (0.7, 0.6)


def members(rng: np.random.Generator, y: np.ndarray, noise: int) -> np.ndarray:
    """``(m, n, 1)`` member probabilities of labels ``y``: inner members first (``noise`` of
    them pure noise: room for the inner blend to fit its rows' labels)."""
    shared = rng.normal(size=len(y))
    sign = 2 * y - 1
    rows = [q * sign + 0.8 * shared + rng.normal(size=len(y)) for q in INNER_Q]
    rows += [rng.normal(size=len(y)) for _ in range(noise)]
    rows += [q * sign + rng.normal(size=len(y)) for q in OUTER_Q]
    return (1 / (1 + np.exp(-np.stack(rows))))[:, :, None]


def blender(method: str, metric: str, trials: int):
    params = {"n_trials": trials} if method == "optuna" else {}
    return build_blender(method, metric=metric, **params)


def one_repeat(seed: int, rows: int, method: str, metric_name: str, trials: int,
               noise: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows + N_TEST).astype(np.float64)
    preds = members(rng, y, noise)
    oof, test = preds[:, :rows], preds[:, rows:]
    y_oof, y_test = y[:rows, None], y[rows:, None]
    folds = rng.permutation(np.arange(rows) % N_FOLDS)
    metric = get_metric(metric_name)
    k = len(INNER_Q) + noise

    inner = blender(method, metric_name, trials).fit(oof[:k], y_oof, folds)
    inner_nested = nested_cv(inner, oof[:k], y_oof, folds, metric)
    inner_test = inner.predict(test[:k])
    out = {
        "inner in-sample": metric(y_oof, inner.oof_),
        "inner nested pooled": inner_nested.pooled,
        "inner nested mean": inner_nested.mean,
        "inner held-out": metric(y_test, inner_test),
        "best member held-out": (max if metric.greater_is_better else min)(
            metric(y_test, p) for p in test),
    }
    for kind, inner_oof in (("in-sample", inner.oof_), ("nested", inner_nested.held_out)):
        stack = np.concatenate([inner_oof[None], oof[k:]])
        outer = blender(method, metric_name, trials).fit(stack, y_oof, folds)
        outer_nested = nested_cv(outer, stack, y_oof, folds, metric)
        test_stack = np.concatenate([inner_test[None], test[k:]])
        out[f"outer({kind}) inner weight"] = float(outer.member_weights_[0])
        out[f"outer({kind}) in-sample"] = metric(y_oof, outer.oof_)
        out[f"outer({kind}) nested pooled"] = outer_nested.pooled
        out[f"outer({kind}) held-out"] = metric(y_test, outer.predict(test_stack))
    flat = blender(method, metric_name, trials).fit(oof, y_oof, folds)
    out["flat held-out"] = metric(y_test, flat.predict(test))
    out["flat nested pooled"] = nested_cv(flat, oof, y_oof, folds, metric).pooled
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--method", default="optuna")
    p.add_argument("--metric", default="roc_auc")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--noise-members", type=int, default=0, help="pure-noise inner members")
    args = p.parse_args()
    start = time.perf_counter()
    results = [one_repeat(s, args.rows, args.method, args.metric, args.trials,
                          args.noise_members) for s in range(args.repeats)]
    print(f"{args.method}, {args.metric}, {args.rows} OOF rows, {N_FOLDS} folds, "
          f"{len(INNER_Q) + args.noise_members} inner members ({args.noise_members} noise), "
          f"{args.repeats} repeats, {time.perf_counter() - start:.0f} s")
    print("| quantity | mean | std | per repeat |")
    print("|---|---|---|---|")
    for key in results[0]:
        values = np.array([r[key] for r in results])
        each = " ".join(f"{v:.4f}" for v in values)
        print(f"| {key} | {values.mean():.4f} | {values.std():.4f} | {each} |")


if __name__ == "__main__":
    main()
