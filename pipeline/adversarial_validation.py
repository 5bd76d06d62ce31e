"""Adversarial validation: how well a classifier tells test rows from train rows.

A gradient-boosted classifier learns "is this row from test?" from the competition's
tabular columns (the pipeline's own column encoding) and text columns (TF-IDF). Its
out-of-fold ROC AUC measures drift: about 0.5 means train and test look alike, so random
folds should track the leaderboard; near 1 means they differ and CV may mislead. Which
columns drift is measured two ways: the drop in AUC when a column is shuffled (permutation
importance on held-out rows: what the classifier relies on) and a one-column distance
(Kolmogorov-Smirnov for numbers, total variation for categories), which also catches a
drifting column whose importance a correlated copy shares.

Every row's out-of-fold "is test" probability then gives sample weights (density ratio
p/(1-p) of the train rows) and a folds file whose fold 0 holds the most test-like train rows.
Images are not compared.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from pipeline.adversarial_options import check_options
from pipeline.artifacts import write_csv, write_json
from pipeline.competition import Competition, load_competition
from pipeline.config import load_config
from pipeline.data.splits import FoldsConfig, folds_spec, make_folds, spec_path
from pipeline.data.tabular import column_encoder, normalise_categories
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

REPORT_DIR = "_adversarial"  # under output_dir: run names start with a letter or digit
IMPORTANCE_ROWS = 20_000  # held-out rows per fold that the permutations score
ID_LIKE_SHARE = 0.9  # a category column with this share of distinct values is an id


@dataclass(frozen=True)
class Block:
    """One competition column and its columns in the feature matrix."""

    name: str
    kind: str  # numeric, categorical or text
    cols: slice


@dataclass
class AdversarialResult:
    """The classifier's out-of-fold verdict and the drift of every column."""

    auc: float
    p_test: np.ndarray  # OOF probability of "is test": train rows, then test rows
    n_train: int
    n_test: int
    drift: list[dict[str, Any]]  # per column, most drifting first

    @property
    def p_train(self) -> np.ndarray:
        """The train rows' probabilities (train.csv order)."""
        return self.p_test[: self.n_train]


def build_features(comp: Competition, text_features: int) -> tuple[np.ndarray, list[Block]]:
    """Train rows then test rows as one float matrix: tabular columns through the shared
    column encoder (fitted on both sets, so a category only test has gets a code of its own),
    then each text column as TF-IDF over its ``text_features`` most frequent terms."""
    both = pd.concat([comp.train, comp.test], ignore_index=True)
    numeric, categorical = comp.numeric_columns, comp.categorical_columns
    parts: list[np.ndarray] = []
    blocks: list[Block] = []
    if numeric or categorical:
        # trees take NaN and unscaled numbers: no fill, no scaling, no indicator columns
        encoder = column_encoder(numeric, categorical, scale=False, impute=False,
                                 indicators=False)
        parts.append(np.asarray(encoder.fit_transform(both[[*numeric, *categorical]]),
                                dtype=np.float32))
        for i, col in enumerate([*numeric, *categorical]):
            kind = "numeric" if i < len(numeric) else "categorical"
            blocks.append(Block(col, kind, slice(i, i + 1)))
    width = sum(p.shape[1] for p in parts)
    for col in comp.cfg.text_columns:
        vectorizer = TfidfVectorizer(max_features=text_features, sublinear_tf=True,
                                     dtype=np.float32)
        try:
            matrix = vectorizer.fit_transform(both[col].fillna("").astype(str))
        except ValueError:  # no word in any row: nothing to compare
            log.warning("adversarial: text column %r holds no words; skipped", col)
            continue
        parts.append(matrix.toarray())
        blocks.append(Block(col, "text", slice(width, width + matrix.shape[1])))
        width += matrix.shape[1]
    if not blocks:
        path = Path(comp.cfg.dir) / comp.cfg.train_file
        raise DataError(
            f"{path}: no columns to compare besides the id and targets: adversarial "
            "validation reads tabular columns ('competition.feature_columns') and text "
            f"columns ('competition.text_columns'), not images (modality "
            f"{comp.cfg.modality!r})")
    return np.hstack(parts), blocks


def _distance(train: pd.Series, test: pd.Series, kind: str) -> float | None:
    """One-column drift in [0, 1]: KS statistic of the numbers present, total variation
    distance of the category frequencies (missing as a category); None for text."""
    if kind == "numeric":
        a = pd.to_numeric(train, errors="coerce").dropna().to_numpy()
        b = pd.to_numeric(test, errors="coerce").dropna().to_numpy()
        from scipy.stats import ks_2samp

        return float(ks_2samp(a, b).statistic) if len(a) and len(b) else None
    if kind == "categorical":
        p = normalise_categories(train.to_frame())[train.name].value_counts(
            normalize=True, dropna=False)
        q = normalise_categories(test.to_frame())[test.name].value_counts(
            normalize=True, dropna=False)
        p, q = p.align(q, fill_value=0.0)
        return float(0.5 * np.abs(p - q).sum())
    return None


def _auc_drops(model: Any, x: np.ndarray, y: np.ndarray,
               blocks: list[Block], rng: np.random.Generator, repeats: int) -> np.ndarray:
    """Drop in ROC AUC of ``model`` (a fitted classifier) on (x, y) when each block's
    columns are shuffled across rows."""
    base = roc_auc_score(y, model.predict_proba(x)[:, 1])
    drops = np.zeros(len(blocks))
    for b, block in enumerate(blocks):
        saved = x[:, block.cols].copy()
        for _ in range(repeats):
            x[:, block.cols] = saved[rng.permutation(len(x))]  # one shuffle for a text block
            drops[b] += base - roc_auc_score(y, model.predict_proba(x)[:, 1])
        x[:, block.cols] = saved
    return drops / repeats


def adversarial_validation(comp: Competition, n_splits: int = 5, seed: int = 0,
                           text_features: int = 100, repeats: int = 2) -> AdversarialResult:
    """Out-of-fold "is test" probabilities of every train and test row, their ROC AUC and
    each column's drift (see the module docstring)."""
    x, blocks = build_features(comp, text_features)
    n_train, n_test = len(comp.train), len(comp.test)
    y = np.r_[np.zeros(n_train), np.ones(n_test)].astype(np.int64)
    if min(n_train, n_test) < n_splits:
        raise DataError(f"{min(n_train, n_test)} rows in the smaller of train and test cannot "
                        f"make {n_splits} adversarial folds ('--n-splits')")
    rng = np.random.default_rng(seed)
    oof = np.zeros(len(y))
    drops = np.zeros(len(blocks))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit_rows, held in splitter.split(x, y):
        # above 10,000 rows it stops early on a 10% holdout of the fitting rows
        from sklearn.ensemble import HistGradientBoostingClassifier  # here: ~0.3 s at import

        model = HistGradientBoostingClassifier(max_iter=200, early_stopping="auto",
                                               random_state=seed)
        model.fit(x[fit_rows], y[fit_rows])
        oof[held] = model.predict_proba(x[held])[:, 1]
        if len(held) > IMPORTANCE_ROWS:  # permutations cost one prediction per column
            held = rng.choice(held, IMPORTANCE_ROWS, replace=False)
        drops += _auc_drops(model, x[held], y[held], blocks, rng, repeats) / n_splits
    drift = []
    for block, drop in zip(blocks, drops, strict=True):
        row: dict[str, Any] = {"feature": block.name, "kind": block.kind,
                               "importance": float(drop), "univariate": _distance(
                                   comp.train[block.name], comp.test[block.name], block.kind)}
        if block.kind == "text":
            row["terms"] = block.cols.stop - block.cols.start
        if block.kind == "categorical":
            values = pd.concat([comp.train[block.name], comp.test[block.name]])
            row["id_like"] = bool(values.nunique() >= ID_LIKE_SHARE * len(values))
        drift.append(row)
    drift.sort(key=lambda r: (-r["importance"], -(r["univariate"] or 0.0)))
    return AdversarialResult(float(roc_auc_score(y, oof)), oof, n_train, n_test, drift)


def reading(auc: float) -> str:
    """A plain reading of an adversarial AUC."""
    if auc < 0.55:
        return ("no noticeable drift: train and test look alike, so random folds should "
                "track the test score")
    if auc < 0.7:
        return "mild drift: some columns differ; check the top ones"
    if auc < 0.9:
        return ("clear drift: CV may mislead; consider dropping the top columns, sample "
                "weights (--weights) or a test-like validation fold (--valid-fold)")
    return ("strong drift: the classifier tells test rows apart almost always; CV on random "
            "folds may say little about the test score")


def sample_weights(p_train: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Density-ratio weights of the train rows, p/(1-p) for p = P(test | row): mean 1, none
    above ``max_weight`` (the scale is found by bisection, so clipping keeps the mean)."""
    if max_weight <= 1:
        raise ValueError(f"{max_weight=} must be > 1")
    p = np.clip(p_train, 1e-6, 1 - 1e-6)
    ratio = p / (1 - p)
    ratio = ratio / ratio.mean()
    lo, hi = 0.0, max_weight / ratio.min()  # mean(min(s * ratio, cap)) grows with s
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.minimum(mid * ratio, max_weight).mean() < 1:
            lo = mid
        else:
            hi = mid
    weights = np.minimum(hi * ratio, max_weight)
    return weights / weights.mean()


def _take(scores: np.ndarray, share: float) -> np.ndarray:
    """Positions of the ``share`` highest scores (at least one, never all)."""
    k = min(max(1, round(share * len(scores))), len(scores) - 1)
    return np.argsort(-scores, kind="stable")[:k]


def most_test_like(comp: Competition, p_train: np.ndarray, share: float) -> np.ndarray:
    """Mask of the ``share`` most test-like train rows. Groups of 'competition.group_column'
    are taken whole (by their mean probability); binary and multiclass labels take the share
    of each class, so the fold keeps the class balance and its metric is defined."""
    ccfg = comp.cfg
    mask = np.zeros(len(p_train), dtype=bool)
    if ccfg.group_column:
        groups = comp.train[ccfg.group_column].to_numpy()
        mean_p = pd.Series(p_train).groupby(groups).mean().sort_values(ascending=False,
                                                                       kind="stable")
        sizes = pd.Series(groups).value_counts().reindex(mean_p.index).to_numpy()
        n_groups = int(np.searchsorted(np.cumsum(sizes), share * len(p_train)) + 1)
        mask[np.isin(groups, mean_p.index[: min(n_groups, len(mean_p) - 1)])] = True
        return mask
    if ccfg.task in ("binary", "multiclass"):
        labels = comp.train[ccfg.target_columns[0]].to_numpy()
        for label in pd.unique(labels):
            rows = np.flatnonzero(labels == label)
            if len(rows) > 1:
                mask[rows[_take(p_train[rows], share)]] = True
        return mask
    mask[_take(p_train, share)] = True
    return mask


def adversarial_folds(comp: Competition, folds: FoldsConfig, p_train: np.ndarray,
                    share: float) -> np.ndarray:
    """Fold ids for ``folds.n_splits`` folds: fold 0 the most test-like train rows, folds
    1..n-1 the rest split by the configured scheme (one fold with n_splits 2)."""
    valid = most_test_like(comp, p_train, share)
    out = np.zeros(len(p_train), dtype=np.int64)
    rest = np.flatnonzero(~valid)
    if folds.n_splits == 2:
        out[rest] = 1
        return out
    sub = Competition(comp.cfg, comp.train.iloc[rest].reset_index(drop=True), comp.test,
                      comp.sample_submission, comp.classes)
    scheme = folds.model_copy(update={"n_splits": folds.n_splits - 1})
    try:
        out[rest] = make_folds(sub, scheme) + 1
    except DataError as err:  # its numbers are of the rest, not of the config's folds
        raise DataError(f"--valid-fold: the {len(rest)} rows outside fold 0 make folds "
                        f"1..{folds.n_splits - 1}, and {err}") from None
    return out


def format_table(result: AdversarialResult, top: int) -> str:
    """The drift table: the ``top`` columns whose shuffling costs the AUC most."""
    rows = [f"{'feature':<24} {'kind':<12} {'importance':>10} {'univariate':>10}"]
    for r in result.drift[:top]:
        uni = "-" if r["univariate"] is None else f"{r['univariate']:.3f}"
        note = "  id-like: distinct per row" if r.get("id_like") else ""
        rows.append(f"{r['feature'][:24]:<24} {r['kind']:<12} {r['importance']:>10.4f} "
                    f"{uni:>10}{note}")
    if len(result.drift) > top:
        rows.append(f"... {len(result.drift) - top} more in the report")
    return "\n".join(rows)


IMPORTANCE_NOTE = ("importance: drop in the adversarial ROC AUC when the column is shuffled "
                   "on held-out rows (mean over folds); univariate: Kolmogorov-Smirnov "
                   "statistic (numbers) or total variation distance (categories), in [0, 1]")


def cmd_adversarial(args: argparse.Namespace) -> int:
    """``pipeline adversarial CONFIG``: print the AUC and drift table, write the report and
    whatever --weights / --valid-fold ask for."""
    path = args.config or args.config_opt
    if not path:
        raise ConfigError("no config given: pass CONFIG or --config CONFIG")
    share = args.valid_share
    cfg = load_config(path, args.overrides)
    weights_path, folds_path = check_options(args, cfg, share)
    comp = load_competition(cfg.competition)
    result = adversarial_validation(comp, args.n_splits, cfg.folds.seed, args.text_features)
    id_col = cfg.competition.id_column
    out_dir = Path(cfg.output_dir) / REPORT_DIR / cfg.name
    report: dict[str, Any] = {
        "name": cfg.name, "competition_dir": cfg.competition.dir, "auc": result.auc,
        "reading": reading(result.auc), "n_train": result.n_train, "n_test": result.n_test,
        "n_splits": args.n_splits, "seed": cfg.folds.seed, "classifier": "scikit-learn "
        "HistGradientBoostingClassifier(max_iter=200, early_stopping=auto), out-of-fold",
        "measures": IMPORTANCE_NOTE, "features": result.drift,
        "not_compared": {"train_only_columns": comp.train_only_columns,
                         "images": cfg.competition.modality == "image"},
    }
    # folds first: a split it cannot make (too few rows of a class) leaves nothing written
    folds = adversarial_folds(comp, cfg.folds, result.p_train, share) if folds_path else None
    ids = pd.concat([comp.train[id_col], comp.test[id_col]], ignore_index=True)
    write_csv(out_dir / "scores.csv", pd.DataFrame({
        id_col: ids, "split": ["train"] * result.n_train + ["test"] * result.n_test,
        "p_test": result.p_test}))
    print(f"{cfg.name}: adversarial ROC AUC = {result.auc:.4f} (train {result.n_train} rows "
          f"vs test {result.n_test}, {args.n_splits}-fold out-of-fold)")
    print(reading(result.auc))
    print(format_table(result, args.top))
    print(IMPORTANCE_NOTE)
    if result.auc > 0.99:  # every train row then gets p ~ 0: no ranking to weigh or fold by
        log.warning("adversarial: AUC %.3f, train and test are all but separable (top "
                    "column %r): train rows get p ~ 0, so weights and a test-like fold carry "
                    "little; drop the separating columns ('competition.feature_columns') and "
                    "rerun", result.auc, result.drift[0]["feature"])
    if weights_path is not None:
        weights = sample_weights(result.p_train, args.max_weight)
        write_csv(weights_path, pd.DataFrame({id_col: comp.train[id_col], "weight": weights}))
        report["weights"] = {"file": str(weights_path), "max_weight": args.max_weight}
        print(f"weights: {weights_path} (p/(1-p) per train row, mean 1, at most "
              f"{args.max_weight:g}; min {weights.min():.3f}, max {weights.max():.3f})")
    if folds_path is not None and folds is not None:
        spec = {**folds_spec(comp, cfg.folds), "made_by": "pipeline adversarial",
                "valid_share": share, "adversarial_auc": result.auc}
        write_json(spec_path(folds_path), spec)  # first: a CSV never exists without its spec
        write_csv(folds_path, pd.DataFrame({id_col: comp.train[id_col], "fold": folds}))
        report["valid_fold"] = {"file": str(folds_path), "share": share,
                                "fold0_rows": int((folds == 0).sum())}
        print(f"folds: {folds_path}: fold 0 = the {int((folds == 0).sum())} most test-like "
              f"train rows ({share:g}), folds 1..{cfg.folds.n_splits - 1} = the rest "
              f"({cfg.folds.scheme}). Train on it with --set folds.name={args.valid_fold} "
              f"(same folds.scheme, n_splits and seed); fold 0's score in scores.json "
              "('seed<s>/fold0') is the test-like validation score")
    write_json(out_dir / "report.json", report)
    print(f"report: {out_dir / 'report.json'}")
    return 0


_EXAMPLE = """examples:
  pipeline adversarial configs/exp.yaml
  pipeline adversarial configs/exp.yaml --weights weights.csv --valid-fold exp_testlike
  pipeline train configs/exp.yaml --set folds.name=exp_testlike
"""


class _Given(argparse.Action):
    """Stores the value and notes it was given (a --valid-share without --valid-fold)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; examples kept as written."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``adversarial`` to the ``pipeline`` command's subparsers."""
    text = ("adversarial validation: a train-vs-test classifier's AUC, the columns that "
            "drift most, optional sample weights and a test-like validation fold")
    p = sub.add_parser("adversarial", help=text, description=text, epilog=_EXAMPLE,
                       formatter_class=_Formatter)
    # the config arguments of every stage (pipeline.cli imports this module, so not shared)
    p.add_argument("config", nargs="?", help="experiment YAML")
    p.add_argument("--config", dest="config_opt", help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config key (dotted path)")
    p.add_argument("--n-splits", type=int, default=5, help="folds of the adversarial classifier")
    p.add_argument("--text-features", type=int, default=100, help="TF-IDF terms per text column")
    p.add_argument("--top", type=int, default=20, help="drift table rows to print")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="write id,weight: train rows weighted by how test-like they are")
    p.add_argument("--max-weight", type=float, default=10.0, help="cap of a sample weight")
    p.add_argument("--valid-fold", metavar="NAME", default=None,
                   help="write <folds_dir>/NAME.csv whose fold 0 is the most test-like rows")
    p.add_argument("--valid-share", type=float, default=0.2, action=_Given,
                   help="share of train rows in that fold 0")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --weights or --valid-fold file")
    p.set_defaults(fn=cmd_adversarial)
