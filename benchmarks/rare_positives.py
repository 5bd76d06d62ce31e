"""A binary competition with rare positives (0.4-2% of rows), numeric columns with missing
values, low- and high-cardinality categories (5,000 merchants, 2,000 card bins) and an id:
the table, a hand-written 5-fold LightGBM to hold the pipeline against, and a scorer.

    python benchmarks/rare_positives.py make DIR [--seed 0] [--rows 140000] [--offset -5.0]
    python benchmarks/rare_positives.py hand DIR [--stop auc|binary_logloss]
        [--variant native|te_native|te_count|catreg|unbalance]
    python benchmarks/rare_positives.py score DIR FILE [FILE ...]

``make`` writes ``train.csv`` (5/7 of the rows), ``test.csv``, ``sample_submission.csv``
(probabilities of ``is_fraud``) and ``answers.csv`` (the test rows' labels, kept back). The
label is drawn from a logistic model: numeric effects (one interaction, one through tanh),
log amount, account age, a per-merchant and a per-card-bin risk, a channel effect, and
``--offset`` as the intercept (-5.0: ~2% positives; -6.6 on 70,000 rows: ~0.4%, ~36 positives
a fold). Missing cells: 20% of ``v1``, 35% of ``v5``, 5% of ``amount``, 3% of ``channel``, 2%
of ``merchant``, and ``v6`` missing in 30% of the positives (missingness that tells).

``hand`` is what a competitor writes in 40 lines: stratified 5 folds (seed 42), LightGBM at
the pipeline's GBDT defaults (learning rate 0.05, up to 10,000 trees, patience 200, native
categories), early-stopped on ``--stop``, the fold models' mean on the test rows. Variants:
``te_native`` adds scikit-learn's cross-fitted ``TargetEncoder`` of the two high-cardinality
columns beside their native codes, ``te_count`` replaces their codes by that encoding and
their counts, ``catreg`` regularises LightGBM's categorical splits (``cat_smooth`` 50,
``min_data_per_group`` 200, ``cat_l2`` 10), ``unbalance`` sets ``is_unbalance``, ``hessian``
sets ``min_child_weight`` 1 (XGBoost's default; LightGBM's is 0.001). It prints
the trees kept per fold, the OOF (CV) and held-out ROC AUC, average precision and log loss.
``score`` prints the same held-out numbers for a run's ``test.parquet`` or a submission.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

ID, TARGET = "transaction_id", "is_fraud"
CATEGORIES, HIGH = ["channel", "country", "merchant", "card_bin"], ["merchant", "card_bin"]
CHANNELS = {"web": (0.4, 0.3), "app": (0.3, 0.0), "pos": (0.2, -0.6), "phone": (0.07, 0.8),
            "other": (0.03, 0.5)}  # share of rows, effect on the log-odds


def make(out: Path, seed: int, rows: int, offset: float) -> None:
    """Write the competition files and the held-out answers under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    amount = np.exp(rng.normal(3.5, 1.2, rows))
    age = rng.integers(0, 3000, rows).astype(float)
    share = 1 / np.arange(1, 5001) ** 0.9  # Zipf-like: a few merchants hold many rows
    merchant = rng.choice(5000, rows, p=share / share.sum())
    merchant_risk = rng.normal(0, 1.0, 5000)
    card_bin = rng.integers(0, 2000, rows)
    bin_risk = rng.normal(0, 0.6, 2000)
    channel = rng.choice(list(CHANNELS), rows, p=[s for s, _ in CHANNELS.values()])
    country = rng.choice([f"C{i:02d}" for i in range(30)], rows)
    logit = (offset + 0.9 * x[:, 0] - 0.7 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
             + 0.6 * np.tanh(x[:, 4]) + 0.35 * (np.log(amount) - 3.5) - 0.0004 * age
             + merchant_risk[merchant] + bin_risk[card_bin]
             + np.array([CHANNELS[c][1] for c in channel]))
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({ID: np.arange(1_000_000, 1_000_000 + rows)})
    for j in range(8):
        frame[f"v{j}"] = x[:, j].round(4)
    frame["amount"], frame["account_age_days"] = amount.round(2), age
    frame["channel"], frame["country"] = channel, country
    frame["merchant"] = [f"m_{i:05d}" for i in merchant]
    frame["card_bin"] = 400000 + card_bin * 7
    for column, missing in (("v1", 0.2), ("v5", 0.35), ("amount", 0.05), ("channel", 0.03),
                            ("merchant", 0.02)):
        frame.loc[rng.random(rows) < missing, column] = np.nan
    frame.loc[(y == 1) & (rng.random(rows) < 0.3), "v6"] = np.nan
    frame[TARGET] = y
    order = rng.permutation(rows)
    train, test = frame.iloc[order[: rows * 5 // 7]], frame.iloc[order[rows * 5 // 7:]]
    train.to_csv(out / "train.csv", index=False)
    test.drop(columns=TARGET).to_csv(out / "test.csv", index=False)
    test[[ID, TARGET]].to_csv(out / "answers.csv", index=False)
    pd.DataFrame({ID: test[ID], TARGET: 0.5}).to_csv(out / "sample_submission.csv", index=False)
    print(f"{out}: {len(train)} train rows, positives {train[TARGET].mean():.4f} "
          f"(test {test[TARGET].mean():.4f})")


def scores(y: np.ndarray, p: np.ndarray) -> str:
    """ROC AUC, average precision and log loss of predictions ``p``."""
    return (f"auc {roc_auc_score(y, p):.4f} ap {average_precision_score(y, p):.4f} "
            f"ll {log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)):.5f}")


def answers(directory: Path, ids: pd.Series) -> np.ndarray:
    return pd.read_csv(directory / "answers.csv").set_index(ID).loc[ids, TARGET].to_numpy()


def _inputs(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, y: np.ndarray,
            variant: str, seed: int) -> list[pd.DataFrame]:
    """The fold's three input frames: categories native (training rows' vocabulary), the
    high-cardinality columns target-encoded (cross-fitted) and counted where asked."""
    from sklearn.preprocessing import TargetEncoder

    frames = [train.copy(), valid.copy(), test.copy()]
    if variant in ("te_native", "te_count"):
        encoder = TargetEncoder(random_state=seed)
        frames[0][[f"{c}_te" for c in HIGH]] = encoder.fit_transform(train[HIGH], y)
        for frame in frames[1:]:
            frame[[f"{c}_te" for c in HIGH]] = encoder.transform(frame[HIGH])
    if variant == "te_count":
        for column in HIGH:
            counts = train[column].value_counts()
            for frame in frames:
                frame[f"{column}_n"] = frame[column].map(counts).fillna(0).astype(float)
    for frame in frames:
        for column in CATEGORIES:
            if variant == "te_count" and column in HIGH:
                frame.drop(columns=column, inplace=True)
            else:
                frame[column] = pd.Categorical(frame[column],
                                               categories=sorted(train[column].unique()))
    return [f.drop(columns=ID) for f in frames]


def hand(directory: Path, stop: str, variant: str) -> None:
    """Stratified 5-fold LightGBM, early-stopped on ``stop``; CV and held-out scores."""
    import lightgbm
    from sklearn.model_selection import StratifiedKFold

    start = time.time()
    train, test = pd.read_csv(directory / "train.csv"), pd.read_csv(directory / "test.csv")
    y = train.pop(TARGET).to_numpy()
    for column in CATEGORIES:
        # one text category per value, missing ones included (pandas keeps NaN in str)
        train[column], test[column] = (f[column].astype(str).fillna("missing")
                                       for f in (train, test))
    params = {"n_estimators": 10000, "learning_rate": 0.05, "verbose": -1, "n_jobs": 1}
    params |= {"unbalance": {"is_unbalance": True},
               "catreg": {"cat_smooth": 50, "min_data_per_group": 200, "cat_l2": 10},
               "hessian": {"min_child_weight": 1.0}}.get(variant, {})
    oof, pred, trees = np.zeros(len(train)), np.zeros(len(test)), []
    splits = StratifiedKFold(5, shuffle=True, random_state=42).split(train, y)
    for k, (fit, valid) in enumerate(splits):
        x_fit, x_valid, x_test = _inputs(train.iloc[fit], train.iloc[valid], test, y[fit],
                                         variant, k)
        model = lightgbm.LGBMClassifier(random_state=k, **params)
        model.fit(x_fit, y[fit], eval_X=(x_valid,), eval_y=(y[valid],), eval_metric=stop,
                  callbacks=[lightgbm.early_stopping(200, verbose=False,
                                                     first_metric_only=True)])
        oof[valid] = model.predict_proba(x_valid)[:, 1]
        pred += model.predict_proba(x_test)[:, 1] / 5
        trees.append(model.best_iteration_)
    print(f"{directory.name} stop {stop} {variant}: trees {trees}; CV {scores(y, oof)}; "
          f"held-out {scores(answers(directory, test[ID]), pred)}; {time.time() - start:.0f} s")


def score(directory: Path, files: list[str]) -> None:
    for name in files:
        frame = pd.read_parquet(name) if name.endswith(".parquet") else pd.read_csv(name)
        p = frame[TARGET].to_numpy()
        print(f"{name}: held-out {scores(answers(directory, frame[ID]), p)}; mean prediction "
              f"{p.mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_make = sub.add_parser("make")
    p_make.add_argument("dir", type=Path)
    p_make.add_argument("--seed", type=int, default=0)
    p_make.add_argument("--rows", type=int, default=140_000)
    p_make.add_argument("--offset", type=float, default=-5.0)
    p_hand = sub.add_parser("hand")
    p_hand.add_argument("dir", type=Path)
    p_hand.add_argument("--stop", default="auc", choices=["auc", "binary_logloss"])
    p_hand.add_argument("--variant", default="native",
                        choices=["native", "te_native", "te_count", "catreg", "unbalance",
                                 "hessian"])
    p_score = sub.add_parser("score")
    p_score.add_argument("dir", type=Path)
    p_score.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir, args.seed, args.rows, args.offset)
    elif args.command == "hand":
        hand(args.dir, args.stop, args.variant)
    else:
        score(args.dir, args.files)


if __name__ == "__main__":
    main()
