"""Shared by the semi-supervised benchmark's parts: variants of a base config, a runner that
trains and scores them (OOF, held-out, wall and CPU time) and the markdown table they print."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import folds, submit, train
from pipeline.competition import load_competition
from pipeline.config import ExperimentConfig, build_config
from pipeline.demo import heldout_score


def variant(base: dict[str, Any], name: str, **train_changes: Any) -> dict[str, Any]:
    """``base`` renamed, with its train section updated (``pseudo`` goes to the top)."""
    data = copy.deepcopy(base)
    data["name"] = f"{base['name']}-{name}"
    extra = train_changes.pop("pseudo", None)
    if extra is not None:
        data["pseudo"] = extra
    data["train"].update(train_changes)
    return data


def original_answers(folder: Path) -> pd.DataFrame:
    """The test rows' answers (id, label), less the near-duplicates of train rows."""
    answers = pd.read_csv(folder / "answers.csv")
    return answers[~answers["id"].astype(str).str.startswith("dup_")]


def original_rows_accuracy(folder: Path, submission: Path) -> float:
    """Accuracy of a submission on the test rows that are not train duplicates."""
    merged = original_answers(folder).merge(pd.read_csv(submission), on="id",
                                            suffixes=("", "_pred"))
    return float((merged["label"] == merged["label_pred"]).mean())


def fold_models_accuracy(folder: Path, run_dir: Path) -> float:
    """Mean over the run's fold models of each one's accuracy on the test rows that are not
    train duplicates: set against the fold ensemble's (the submission's), it shows how much of
    a score the ensemble adds, which consistency training can take away by making the fold
    models agree."""
    folds_ = pd.read_parquet(run_dir / "test_folds.parquet").merge(original_answers(folder),
                                                                    on="id")
    classes = [c for c in folds_.columns if c not in ("seed", "fold", "id", "label")]
    predicted = folds_[classes].to_numpy().argmax(axis=1)
    right = pd.Series(pd.Index(classes)[predicted].astype(str) == folds_["label"].astype(str))
    return float(right.groupby([folds_["seed"], folds_["fold"]]).mean().mean())


class Runner:
    """Trains variants and scores them: OOF accuracy, held-out accuracy, wall time."""

    def __init__(self, base: dict[str, Any], config_path: Path,
                 heldout: Callable[[Path], float] | None = None,
                 keep_checkpoints: bool = False) -> None:
        self.base = base
        # a scored run's checkpoints go (resnet18's last.pt with its optimizer is 134 MB a
        # fold: a few dozen arms fill a disk); its predictions, which pseudo rounds read, stay
        self.keep_checkpoints = keep_checkpoints
        self.config_path = config_path
        self.heldout = heldout or (lambda sub: heldout_score(config_path, sub))
        self.subs = base["submissions_dir"]
        self.done: dict[str, tuple[ExperimentConfig, float, float, float]] = {}
        # CPU seconds of this process per run: on a machine shared with other jobs the wall
        # time swings with their load, the CPU time (one torch thread) much less
        self.cpu: dict[str, float] = {}

    def run(self, data: dict[str, Any]) -> tuple[ExperimentConfig, float, float, float]:
        """Train (once per name) and score a variant: config, OOF, held-out, seconds."""
        if data["name"] in self.done:
            return self.done[data["name"]]
        cfg = build_config(data)
        start, cpu = time.perf_counter(), time.process_time()
        comp = load_competition(cfg.competition)
        folds.run(cfg, comp)
        oof = train.run(cfg, comp)  # writes the pseudo-labels first when the config has some
        seconds = time.perf_counter() - start
        self.cpu[cfg.name] = time.process_time() - cpu
        held = self.heldout(submit.run(cfg.run_dir, cfg.name, self.subs))
        if not self.keep_checkpoints:
            for weights in cfg.run_dir.rglob("*.pt"):
                weights.unlink()
        print(f"{cfg.name}: OOF {oof:.4f} held-out {held:.4f} ({seconds:.0f} s)", flush=True)
        self.done[cfg.name] = (cfg, oof, held, seconds)
        return self.done[cfg.name]


def print_table(title: str, header: str, rows: list[str]) -> None:
    print(f"\n{title}\n\n{header}\n|" + "---|" * (header.count("|") - 1))
    for row in rows:
        print(row)
