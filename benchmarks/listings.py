"""A generated marketplace-listings competition (text + table, multiclass), its hand baselines.

Shaped like Mercari's categorisation or PetFinder adoption: ``train.csv`` with an ``id``, a
short ``title``, a longer ``description`` (some cells empty, HTML entities, emoji, a few
non-English words), a high-cardinality ``brand`` with missing values, a ``price`` with
outliers (0 and 99,999 placeholders), a ``condition`` 1-5, an ISO date ``listed_at`` and a
``category`` target of 12 imbalanced string classes. The class lives in both halves: the
words name a family of two classes (``watch_luxury`` and ``watch_fashion`` share every word)
and price, brand and condition tell the pair apart, so neither the text alone nor the table
alone scores well. ``test.csv`` lacks the target; ``answers.csv`` holds it;
``sample_submission.csv`` has one probability column per class, in an order other than sorted
(as Kaggle's samples often are), and ``sample_submission_label.csv`` a single label column.

Hand baselines (``baseline``): TF-IDF of title + description into LogisticRegression, and
the same TF-IDF's 64 SVD directions plus the numeric columns into LightGBM, scored on the
held-out answers by log loss and macro F1.

Run: ``python benchmarks/listings.py make DIR --seed 0``;
``python benchmarks/listings.py baseline DIR``; ``python benchmarks/listings.py score DIR CSV``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, log_loss

# Family -> (words, the two classes told apart by price/brand/condition).
FAMILIES = {
    "watch": ("watch wristwatch dial strap chronograph bezel", ("watch_luxury", "watch_fashion")),
    "shoe": ("sneakers shoes trainers boots sole laces", ("shoe_designer", "shoe_casual")),
    "phone": ("phone smartphone screen battery charger case", ("phone_new", "phone_refurb")),
    "toy": ("toy lego figure puzzle doll playset", ("toy_collectible", "toy_kids")),
    "bag": ("handbag purse tote leather clutch wallet", ("bag_luxury", "bag_everyday")),
    "book": ("book novel hardcover paperback edition author", ("book_rare", "book_used")),
}
CLASSES = [c for _, pair in FAMILIES.values() for c in pair]
# Imbalanced: the first class of each pair is the rarer, expensive one.
FAMILY_SHARE = np.array([0.12, 0.22, 0.2, 0.18, 0.16, 0.12])
PREMIUM_SHARE = np.array([0.15, 0.3, 0.45, 0.1, 0.2, 0.06])


def _words(text: str) -> list[str]:
    return text.split()


FILLER = _words("great condition barely used fast shipping smoke free home bundle discount "
                "original box authentic gift perfect like new nice clean")
FOREIGN = _words("très bien neu gebraucht nuevo precio schön envío rápido")
EMOJI = ["😀", "🔥", "✨", "👍", "💯", "📦"]
HTML = ["&amp;", "&quot;", "&#39;", "&lt;3", "&nbsp;"]


def _text(rng: np.random.Generator, words: list[str], n_key: int, n_fill: int) -> str:
    parts = list(rng.choice(words, n_key)) + list(rng.choice(FILLER, n_fill))
    if rng.random() < 0.15:
        parts.append(str(rng.choice(FOREIGN)))
    if rng.random() < 0.2:
        parts.append(str(rng.choice(EMOJI)))
    if rng.random() < 0.2:
        parts.append(str(rng.choice(HTML)))
    rng.shuffle(parts)
    return " ".join(parts)


def generate(n: int, seed: int) -> pd.DataFrame:
    """``n`` listings with their ``category``."""
    rng = np.random.default_rng(seed)
    family_ids = rng.choice(len(FAMILIES), n, p=FAMILY_SHARE / FAMILY_SHARE.sum())
    premium = rng.random(n) < PREMIUM_SHARE[family_ids]
    names = list(FAMILIES)
    # 1,500 brands, each leaning premium or not; a brand is listed under several families.
    n_brands = 1500
    brand_premium = rng.random(n_brands) < 0.3
    rows = []
    for i in range(n):
        fam = names[family_ids[i]]
        words = FAMILIES[fam][0].split()
        # A tenth of titles carry another family's words (mislabelled by the seller).
        title_words = words if rng.random() > 0.1 else FAMILIES[rng.choice(names)][0].split()
        title = _text(rng, title_words, 2, int(rng.integers(0, 3)))
        desc = _text(rng, words, int(rng.integers(0, 4)), int(rng.integers(5, 25)))
        if rng.random() < 0.12:
            desc = "" if rng.random() < 0.5 else None
        if rng.random() < 0.3:
            brand = None
        else:
            pool = np.flatnonzero(brand_premium == premium[i])
            brand = f"brand_{int(rng.choice(pool)):04d}" if rng.random() < 0.85 else (
                f"brand_{int(rng.integers(n_brands)):04d}")
        base = {"watch": 80, "shoe": 60, "phone": 250, "toy": 25, "bag": 70, "book": 15}[fam]
        price = base * np.exp(rng.normal(1.2 if premium[i] else 0.0, 0.55))
        if rng.random() < 0.02:
            price = float(rng.choice([0.0, 99999.0]))
        cond_p = [0.35, 0.3, 0.2, 0.1, 0.05] if premium[i] else [0.1, 0.15, 0.25, 0.3, 0.2]
        condition = int(rng.choice(5, p=cond_p)) + 1
        day = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 400)))
        cls = FAMILIES[fam][1][0 if premium[i] else 1]
        rows.append((title, desc, brand, round(float(price), 2), condition,
                     day.strftime("%Y-%m-%d"), cls))
    frame = pd.DataFrame(rows, columns=["title", "description", "brand", "price", "condition",
                                        "listed_at", "category"])
    frame.insert(0, "id", [f"L{seed}{i:06d}" for i in range(n)])
    return frame


def make(out: Path, seed: int, n_train: int, n_test: int) -> None:
    """Write train.csv, test.csv, answers.csv and the two sample submissions."""
    out.mkdir(parents=True, exist_ok=True)
    frame = generate(n_train + n_test, seed)
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    train.to_csv(out / "train.csv", index=False)
    test.drop(columns="category").to_csv(out / "test.csv", index=False)
    test[["id", "category"]].to_csv(out / "answers.csv", index=False)
    # Kaggle samples list classes in their own order, not sorted.
    sample = pd.DataFrame({"id": test["id"]})
    for cls in CLASSES:
        sample[cls] = 1.0 / len(CLASSES)
    sample.to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test["id"], "category": CLASSES[1]}).to_csv(
        out / "sample_submission_label.csv", index=False)
    counts = train["category"].value_counts()
    print(f"wrote {out}: {len(train)} train, {len(test)} test rows; classes {counts.to_dict()}")


def score(directory: Path, submission: Path) -> dict[str, float]:
    """Held-out log loss (probability columns) or macro F1 (either format)."""
    answers = pd.read_csv(directory / "answers.csv")
    sub = pd.read_csv(submission)
    merged = answers.merge(sub, on="id", how="left", validate="one_to_one")
    assert len(sub) == len(answers), (len(sub), len(answers))
    classes = sorted(answers["category"].unique().tolist() + [
        c for c in CLASSES if c not in set(answers["category"])])
    if "category_y" in merged:  # a label submission
        return {"f1_macro": f1_score(merged["category_x"], merged["category_y"],
                                     average="macro")}
    proba = merged[classes].to_numpy(np.float64)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-4), proba.sum(axis=1)[:5]
    guess = np.array(classes)[proba.argmax(axis=1)]
    return {"log_loss": log_loss(merged["category"], proba, labels=classes),
            "f1_macro": f1_score(merged["category"], guess, average="macro")}


def baseline(directory: Path) -> dict[str, dict[str, float]]:
    """TF-IDF + LogisticRegression; TF-IDF SVD + numeric columns into LightGBM."""
    import lightgbm as lgb
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train = pd.read_csv(directory / "train.csv")
    test = pd.read_csv(directory / "test.csv")
    answers = pd.read_csv(directory / "answers.csv").set_index("id").loc[test["id"], "category"]

    def text(df: pd.DataFrame) -> pd.Series:
        return df["title"].fillna("") + " " + df["description"].fillna("")

    results = {}
    start = time.time()
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    xtr, xte = vec.fit_transform(text(train)), vec.transform(text(test))
    lr = LogisticRegression(C=4.0, max_iter=2000).fit(xtr, train["category"])
    p = lr.predict_proba(xte)
    results["tfidf_logreg"] = {
        "log_loss": log_loss(answers, p, labels=lr.classes_),
        "f1_macro": f1_score(answers, lr.classes_[p.argmax(1)], average="macro"),
        "seconds": time.time() - start}
    start = time.time()
    svd = TruncatedSVD(64, random_state=0).fit(xtr)

    def table(df: pd.DataFrame, x: sparse.spmatrix) -> pd.DataFrame:
        out = pd.DataFrame(svd.transform(x), columns=[f"svd{i}" for i in range(64)])
        out["price"] = df["price"].to_numpy()
        out["condition"] = df["condition"].to_numpy()
        known = sorted(train["brand"].dropna().unique())
        brand = df["brand"].where(df["brand"].isin(known))  # unseen brands: missing
        out["brand"] = pd.Categorical(brand, categories=known)
        out["day"] = pd.to_datetime(df["listed_at"]).dt.day_of_year.to_numpy()
        return out

    # early-stopped on a tenth of the train rows, as a competitor's first LightGBM is
    rows = np.random.default_rng(0).permutation(len(train))
    fit, stop = rows[len(rows) // 10:], rows[: len(rows) // 10]
    x_all = table(train, xtr)
    gbm = lgb.LGBMClassifier(n_estimators=5000, learning_rate=0.05, num_leaves=31,
                             verbose=-1, n_jobs=1, random_state=0)
    gbm.fit(x_all.iloc[fit], train["category"].iloc[fit],
            eval_set=[(x_all.iloc[stop], train["category"].iloc[stop])],
            callbacks=[lgb.early_stopping(100, verbose=False)])
    p = gbm.predict_proba(table(test, xte))
    results["tfidf_svd_lightgbm"] = {
        "log_loss": log_loss(answers, p, labels=gbm.classes_),
        "f1_macro": f1_score(answers, gbm.classes_[p.argmax(1)], average="macro"),
        "trees": gbm.best_iteration_, "seconds": time.time() - start}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir", type=Path)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--train", type=int, default=15000)
    m.add_argument("--test", type=int, default=5000)
    b = sub.add_parser("baseline")
    b.add_argument("dir", type=Path)
    s = sub.add_parser("score")
    s.add_argument("dir", type=Path)
    s.add_argument("submission", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir, args.seed, args.train, args.test)
    elif args.command == "baseline":
        print(json.dumps(baseline(args.dir), indent=1))
    else:
        print(json.dumps(score(args.dir, args.submission), indent=1))


if __name__ == "__main__":
    main()
