"""Ensembles trained to differ: M members trained independently, with negative correlation
learning, and with feature repulsion, at equal epochs, on an image set and a tabular set.

    python benchmarks/diverse_ensembles.py [--members 3] [--image-epochs 4]
        [--tabular-epochs 30] [--arms ...] [--sets image tabular]

The image set is scikit-learn's 8x8 digits (1,797 rows) as PNG files, read at 16 px by timm's
``test_resnet`` trained from scratch: 1,297 train rows, 500 held-out test rows whose answers
stay apart. The tabular set is scikit-learn's diabetes regression (442 rows: 342 train, 100
held out) through the ``mlp`` encoder. Each arm trains ``train.ensemble`` with M members on
3 folds, once per seed (``--seeds``, default 0 and 1: the spread between them is what chance
alone does), with the last epoch's weights (no epoch chosen on the OOF rows). The table gives
the members' OOF scores (mean and range), each seed's ensemble OOF and held-out score, the
members' mean pairwise correlation of OOF predictions and of OOF errors (prediction minus
target, one-hot for classes), and the wall time of the arm. Torch runs on one thread.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("PIPELINE_PROGRESS", "0")

import torch

from pipeline import train
from pipeline.artifacts import read_json, write_csv
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.demo.competitions import package_dir
from pipeline.engine.member_ensemble import mean_pairwise_correlation
from pipeline.metrics import get_metric

ARMS: dict[str, dict[str, Any]] = {
    "one network (M = 1)": {"members": 1},  # the plain network: what M members cost and gain
    "independent": {"method": "independent"},
    "ncl 0.5": {"method": "ncl", "lambda": 0.5},
    "ncl 1.0": {"method": "ncl", "lambda": 1.0},
    "repulsion 0.1 (features)": {"method": "weight_repulsion", "lambda": 0.1},
    "repulsion 1.0 (features)": {"method": "weight_repulsion", "lambda": 1.0},
    "repulsion 1.0 (weights)": {"method": "weight_repulsion", "lambda": 1.0,
                                "repel": "weights"},
}
DEFAULT_ARMS = ["one network (M = 1)", "independent", "ncl 0.5", "ncl 1.0",
                "repulsion 0.1 (features)"]


def _split(frame: pd.DataFrame, n_test: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    return frame.iloc[order[n_test:]], frame.iloc[order[:n_test]]


def _write(folder: Path, train_rows: pd.DataFrame, test_rows: pd.DataFrame, target: str) -> None:
    write_csv(folder / "answers.csv", test_rows[["id", target]])
    write_csv(folder / "sample_submission.csv", test_rows[["id"]].assign(**{target: 0}))
    write_csv(folder / "test.csv", test_rows.drop(columns=target))
    write_csv(folder / "train.csv", train_rows)


def build_digits(folder: Path) -> None:
    """scikit-learn's 8x8 digits as grayscale PNG files (16 levels stretched to 0-255)."""
    from PIL import Image

    if (folder / "train.csv").is_file():
        return
    with gzip.open(package_dir("sklearn", "digits") / "datasets" / "data" / "digits.csv.gz") as f:
        data = np.loadtxt(f, delimiter=",")
    pixels, labels = data[:, :64].reshape(-1, 8, 8), data[:, 64].astype(int)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    ids = [f"d{i:04d}" for i in range(len(labels))]
    for i, key in enumerate(ids):
        Image.fromarray((pixels[i] * 255 / 16).astype(np.uint8), mode="L").save(
            folder / "images" / f"{key}.png")
    frame = pd.DataFrame({"id": ids, "image": [f"images/{k}.png" for k in ids], "label": labels})
    _write(folder, *_split(frame, 500), "label")


def build_diabetes(folder: Path) -> None:
    """scikit-learn's diabetes regression: ten standardised features, disease progression."""
    from sklearn.datasets import load_diabetes

    if (folder / "train.csv").is_file():
        return
    bunch = load_diabetes(as_frame=True)
    frame = bunch.data.assign(progression=bunch.target)
    frame.insert(0, "id", np.arange(len(frame)))
    _write(folder, *_split(frame, 100), "progression")


def image_config(root: Path) -> dict[str, Any]:
    return {
        "competition": {"dir": str(root / "digits"), "id_column": "id",
                        "target_columns": ["label"], "task": "multiclass",
                        "metric": "log_loss", "modality": "image", "image_column": "image"},
        "model": {"encoders": [{"name": "timm:test_resnet"}], "image_size": 16,
                  "head": {"dropout": 0.1}},
        "train": {"batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3},
                  "scheduler": {"name": "cosine", "warmup_epochs": 0.5},
                  "augment": {"image": [{"name": "Affine", "translate_percent": [-0.1, 0.1],
                                         "p": 0.5}]}},
    }


def tabular_config(root: Path) -> dict[str, Any]:
    return {
        "competition": {"dir": str(root / "diabetes"), "id_column": "id",
                        "target_columns": ["progression"], "task": "regression",
                        "metric": "rmse", "modality": "tabular"},
        "model": {"encoders": [{"name": "mlp", "params": {"hidden": [64, 64]}}],
                  "head": {"dropout": 0.1}},
        "train": {"batch_size": 32, "optimizer": {"name": "adamw", "lr": 3e-3,
                                                  "weight_decay": 0.01},
                  "scheduler": {"name": "cosine", "warmup_epochs": 0.5}},
    }


def _held_out(cfg: Any, comp: Any, test_file: Path, metric: str | None = None) -> float:
    """The metric (default: the competition's) of a test.parquet against answers.csv."""
    cols, y = comp.pred_columns, comp.targets
    answers = pd.read_csv(Path(cfg.competition.dir) / "answers.csv")
    test = pd.read_parquet(test_file).set_index(cfg.competition.id_column).loc[answers["id"]]
    held_y = answers[cfg.competition.target_columns].to_numpy(dtype=np.float64)
    if cfg.competition.task == "multiclass":  # class indices, as comp.targets holds them
        held_y = np.searchsorted(np.array(comp.classes), held_y[:, 0])
    held_y = held_y.reshape(len(held_y), *y.shape[1:])
    return float(get_metric(metric or cfg.competition.metric)(held_y, test[cols].to_numpy()))


def run_arm(base: dict[str, Any], name: str, ensemble: dict[str, Any], members: int,
            epochs: int, seeds: list[int], out: Path) -> dict[str, Any]:
    """Train one arm with every seed (each seed an ensemble of its own); score each seed's
    ensemble and members on the OOF and on the held-out rows."""
    data = {**base, "name": name, "output_dir": str(out / "runs"),
            "folds_dir": str(out / "folds"), "submissions_dir": str(out / "submissions"),
            "folds": {"scheme": "stratified", "n_splits": 3, "seed": 42}}
    ensemble = dict(ensemble)
    members = ensemble.pop("members", members)
    # the last epoch's weights: the best epoch would be chosen on the OOF rows themselves
    data["train"] = {**base["train"], "epochs": epochs, "precise_bn": 8, "seeds": seeds,
                     "checkpoint": "last", "ensemble": {"members": members, **ensemble}}
    cfg = build_config(data)
    start = time.perf_counter()
    train.run(cfg)
    seconds = time.perf_counter() - start
    comp = load_competition(cfg.competition)
    metric = get_metric(cfg.competition.metric)
    cols, y = comp.pred_columns, comp.targets
    truth = np.eye(len(cols))[y] if cfg.competition.task == "multiclass" else y.reshape(len(y), -1)
    scores = read_json(cfg.run_dir / "scores.json")["scores"]
    row: dict[str, Any] = {"arm": name, "members": [], "oof": [], "held": [], "corr": [],
                           "err_corr": [], "acc": [], "seconds": seconds, "metric": metric.name}
    accuracy = get_metric("accuracy")
    for seed in seeds:
        folder = cfg.run_dir / f"seed{seed}"
        parts = [folder / f"member{m}" for m in range(members)] if members > 1 else [folder]
        oofs = [pd.read_parquet(f / "oof.parquet")[cols].to_numpy() for f in parts]
        row["members"] += [metric(y, o) for o in oofs]
        row["oof"].append(scores[f"seed{seed}"])
        row["held"].append(_held_out(cfg, comp, folder / "test.parquet"))
        if cfg.competition.task == "multiclass":  # where averaging's gain shows in the labels
            oof = pd.read_parquet(folder / "oof.parquet")[cols].to_numpy()
            row["acc"].append((accuracy(y, oof),
                               _held_out(cfg, comp, folder / "test.parquet", "accuracy")))
        row["corr"].append(mean_pairwise_correlation(oofs))
        row["err_corr"].append(mean_pairwise_correlation([o - truth for o in oofs]))
    return row


def _each(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ({' / '.join(f'{v:.4f}' for v in values)})"


def table(title: str, rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["metric"]
    acc = bool(rows[0]["acc"])
    lines = [f"**{title}** ({metric}, lower is better; each cell: mean over seeds (each seed))",
             "", f"| arm | members' OOF {metric}: mean (range) | ensemble OOF | held-out | "
             "OOF corr | error corr | " + ("accuracy OOF / held-out | " if acc else "")
             + "wall time |", "|---|---|---|---|---|---|" + ("---|" if acc else "") + "---|"]
    for r in rows:
        s = r["members"]
        corr = "-" if np.isnan(r["corr"]).all() else f"{np.mean(r['corr']):.3f}"
        err = "-" if np.isnan(r["err_corr"]).all() else f"{np.mean(r['err_corr']):.3f}"
        lines.append(f"| {r['arm']} | {np.mean(s):.4f} ({min(s):.4f}-{max(s):.4f}) | "
                     f"{_each(r['oof'])} | {_each(r['held'])} | {corr} | {err} | "
                     + (f"{np.mean([a for a, _ in r['acc']]):.4f} / "
                        f"{np.mean([h for _, h in r['acc']]):.4f} | " if acc else "")
                     + f"{r['seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="runs/diverse_ensembles")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--image-epochs", type=int, default=4)
    parser.add_argument("--tabular-epochs", type=int, default=30)
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    parser.add_argument("--sets", nargs="+", default=["image", "tabular"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                        help="each seed trains the arm's ensemble anew (the spread is chance)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.output_dir)
    build_digits(out / "data" / "digits")
    build_diabetes(out / "data" / "diabetes")
    sets = {"image": (image_config(out / "data"), args.image_epochs,
                      "digits 8x8 (16 px), timm test_resnet from scratch"),
            "tabular": (tabular_config(out / "data"), args.tabular_epochs,
                        "diabetes regression, mlp [64, 64]")}
    for key in args.sets:
        base, epochs, label = sets[key]
        rows = []
        for arm in args.arms:
            slug = re.sub(r"[^a-z0-9]+", "-", arm.replace(".", "")).strip("-")
            rows.append(run_arm(base, f"{key}-{slug}", ARMS[arm], args.members, epochs,
                                args.seeds, out))
            print(f"{key} {arm}: OOF {_each(rows[-1]['oof'])}, held-out "
                  f"{_each(rows[-1]['held'])} ({rows[-1]['seconds']:.0f} s)", flush=True)
        print("\n" + table(f"{label}: M = {args.members}, {epochs} epochs, 3 folds", rows)
              + "\n", flush=True)


if __name__ == "__main__":
    main()
