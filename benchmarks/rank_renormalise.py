"""What renormalising a multiclass rank / power blend's rows costs its ROC AUC.

``rank`` and ``power`` blends scale each multiclass row to sum to one (scikit-learn's
one-vs-rest ROC AUC, and Kaggle scorers built on it, refuse rows that do not). One-vs-rest
AUC reads each class's column over the rows, and dividing a row by its sum reorders a
column. This measures, on synthetic multiclass members of different quality and
calibration, the pipeline's macro one-vs-rest ROC AUC of the blend as written (rows
renormalised) and of the same blend before renormalising, on the OOF and on 20,000 test
rows; and how often scikit-learn's ``multi_class="ovr"`` refuses the raw rows.

Run: ``python benchmarks/rank_renormalise.py [--repeats 5] [--classes 5] [--rows 2000]``
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from pipeline.ensemble import build_blender
from pipeline.ensemble._base import renormalise
from pipeline.metrics import get_metric

N_TEST = 20_000
QUALITY = (1.6, 1.3, 1.0, 0.7, 0.4)
TEMPERATURE = (1.0, 0.5, 2.0, 1.0, 3.0)  # some members over-, some under-confident


def members(rng: np.random.Generator, y: np.ndarray, c: int) -> np.ndarray:
    """``(m, n, c)`` softmax probabilities: class logit ``q`` on the true class, plus noise,
    divided by a member temperature."""
    onehot = np.eye(c)[y]
    out = []
    for q, t in zip(QUALITY, TEMPERATURE, strict=True):
        logits = (q * onehot + rng.normal(size=onehot.shape)) / t
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(out)


def raw_blend(method: str, stacked: np.ndarray) -> np.ndarray:
    """The blend of :mod:`pipeline.ensemble._averaging` before its rows are renormalised."""
    if method == "rank":
        return (rankdata(stacked, axis=1) / stacked.shape[1]).mean(axis=0)
    return ((stacked**2.0).mean(axis=0)) ** 0.5


def sklearn_refuses(y: np.ndarray, p: np.ndarray) -> bool:
    try:
        roc_auc_score(y, p, multi_class="ovr")
    except ValueError:
        return True
    return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--rows", type=int, default=2000)
    args = p.parse_args()
    auc = get_metric("roc_auc")
    rows: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
    for seed in range(args.repeats):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, args.classes, args.rows + N_TEST)
        preds = members(rng, y, args.classes)
        parts = {"OOF": (preds[:, :args.rows], y[:args.rows]),
                 "test": (preds[:, args.rows:], y[args.rows:])}
        for method in ("rank", "power"):
            blender = build_blender(method).fit(parts["OOF"][0], parts["OOF"][1])
            for part, (stacked, labels) in parts.items():
                written = blender.predict(stacked)
                raw = raw_blend(method, stacked)
                assert np.allclose(written, renormalise(raw))  # the blend as the stage writes it
                rows.setdefault((method, part), []).append(
                    (auc(labels, written), auc(labels, raw), sklearn_refuses(labels, raw)))
    for method in ("mean",):
        for seed in range(args.repeats):
            rng = np.random.default_rng(seed)
            y = rng.integers(0, args.classes, args.rows + N_TEST)
            preds = members(rng, y, args.classes)[:, args.rows:]
            mean = preds.mean(axis=0)
            rows.setdefault((method, "test"), []).append(
                (auc(y[args.rows:], mean), auc(y[args.rows:], mean), False))
    print(f"{args.classes} classes, {args.rows} OOF rows, {N_TEST} test rows, "
          f"{args.repeats} repeats, members q={QUALITY} T={TEMPERATURE}")
    print("| method | rows | AUC renormalised (written) | AUC raw | raw - renormalised | "
          "sklearn ovr refuses raw |")
    print("|---|---|---|---|---|---|")
    for (method, part), values in rows.items():
        a = np.array([(w, r) for w, r, _ in values])
        refused = sum(v[2] for v in values)
        print(f"| {method} | {part} | {a[:, 0].mean():.5f} | {a[:, 1].mean():.5f} | "
              f"{(a[:, 1] - a[:, 0]).mean():+.5f} (min {(a[:, 1] - a[:, 0]).min():+.5f}) | "
              f"{refused}/{len(values)} |")


if __name__ == "__main__":
    main()
