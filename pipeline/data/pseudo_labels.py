"""Pseudo-labels: which rows (test, unlabelled train) an earlier run's predictions label, and
with what.

The pseudo stage (:mod:`pipeline.pseudo`) picks the source predictions per fold; this module
chooses rows (threshold, top fraction, class balance) and turns predictions into labels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.schema import Section


class PseudoConfig(Section):
    """Pseudo-labelled test rows (and train rows kept without a target, under
    'competition.unlabelled_train_rows: unlabelled') added to every fold's training rows.

    ``source`` is a finished run: the model of fold k then trains on labels from the source's
    fold-k models only, which never saw fold k's validation rows, so CV stays honest (also
    over several rounds, each round's source being the previous round). A blend (or any
    source without per-fold test predictions) leaks every fold's labels into every fold and
    is refused unless ``allow_leak`` is set.
    """

    source: str
    labels: Literal["hard", "soft"] = "hard"
    threshold: float | None = Field(None, gt=0, le=1)  # keep rows at least this confident
    top_fraction: float | None = Field(None, gt=0, le=1)  # or the most confident fraction
    balance: bool = False  # as many rows per predicted class (the rarest class's count)
    weight: float = Field(1.0, gt=0)  # loss weight of a pseudo row (train rows weigh 1)
    allow_leak: bool = False

    @model_validator(mode="after")
    def _check(self) -> PseudoConfig:
        if self.threshold is not None and self.top_fraction is not None:
            raise ValueError("give 'threshold' or 'top_fraction', not both")
        return self


    def own_run(self, run_dir: Path) -> str | None:
        """Why ``source`` cannot be the round's own run folder ``run_dir``, or None: a
        pseudo section added to a config without a new 'name' was refused as another config
        of that folder, and --overwrite, as the refusal advised, deleted the source run."""
        if Path(os.path.abspath(self.source)) != Path(os.path.abspath(run_dir)):
            return None
        return (f"'pseudo.source' {self.source} is this config's own run folder: the round "
                "would replace the run it takes its labels from; give the round another 'name'")

    def mismatch(self, task: str) -> str | None:
        """Why these settings cannot label rows of ``task``, or None when they can."""
        if task == "regression" and (self.threshold or self.top_fraction or self.balance):
            return ("'pseudo.threshold', 'top_fraction' and 'balance' need class confidences; "
                    "a regression task has none")
        if task == "multilabel" and self.balance:
            return "'pseudo.balance' needs one class per row, not multilabel"
        return None


def row_confidence(p: np.ndarray, task: str) -> np.ndarray:
    """How sure each row's prediction is: top class probability; for 0/1 labels the
    distance from 0.5 mapped to [0.5, 1] (the least sure label for multilabel)."""
    if task == "multiclass":
        return p.max(axis=1)
    if task in ("binary", "multilabel"):
        return np.maximum(p, 1 - p).min(axis=1)
    return np.ones(len(p))


def predicted_class(p: np.ndarray, task: str) -> np.ndarray:
    """The class each row would be labelled with (binary: 0/1)."""
    return p.argmax(axis=1) if task == "multiclass" else (p[:, 0] >= 0.5).astype(int)


def select(p: np.ndarray, task: str, cfg: PseudoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rows to keep (indices, most confident first) and their labels."""
    conf = row_confidence(p, task)
    order = np.argsort(-conf, kind="stable")
    if cfg.threshold is not None:
        order = order[conf[order] >= cfg.threshold]
    elif cfg.top_fraction is not None:
        order = order[: math.ceil(cfg.top_fraction * len(p))]
    if cfg.balance and len(order):
        cls = predicted_class(p[order], task)
        n_classes = p.shape[1] if task == "multiclass" else 2
        counts = np.bincount(cls, minlength=n_classes)
        per_class = counts.min()
        rank = np.zeros(len(order), dtype=int)
        for c in range(n_classes):
            rank[cls == c] = np.arange(counts[c])
        order = order[rank < per_class]
    kept = p[order]
    if cfg.labels == "soft" or task == "regression":
        return order, kept
    if task == "multiclass":
        return order, np.eye(p.shape[1])[kept.argmax(axis=1)]
    return order, (kept >= 0.5).astype(np.float64)
