"""Predict stage: fold checkpoints x test-time augmentation -> OOF and test predictions.

Reruns only what the ``predict`` section changed: a fold whose predictions were made under
the current section is kept; every fold must have been trained under this config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.held_images import competition_images, holding_images
from pipeline.engine.accelerator import build_accelerator
from pipeline.errors import DataError
from pipeline.fold_lock import FoldBusy, fold_lock
from pipeline.jobs import predict_fold
from pipeline.models.network import build_tokenizer
from pipeline.runs import (
    fold_complete,
    fold_dir,
    fold_score,
    gather,
    load_folds,
    predictions_current,
)

log = logging.getLogger(__name__)


def _check_trained(cfg: ExperimentConfig, jobs: list[tuple[int, int]],
                   done: Callable[[int, int], bool]) -> None:
    for seed, fold in jobs:
        if not done(seed, fold):
            raise DataError(f"{fold_dir(cfg, seed, fold)} is not trained under this config and "
                            "these train/test files: run the train stage first")


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> float:
    """Refresh every fold's predictions for the current ``predict`` section and regather."""
    comp = comp or load_competition(cfg.competition)
    jobs = [(seed, fold) for seed in cfg.train.seeds for fold in range(cfg.folds.n_splits)]
    # a fold that never trained is refused before load_folds makes the folds file (a refusal
    # writes nothing); one that trained is then checked against its records, the folds too
    _check_trained(cfg, jobs, lambda s, f: (fold_dir(cfg, s, f) / "metrics.json").is_file())
    folds = load_folds(cfg, comp)
    _check_trained(cfg, jobs, lambda s, f: fold_complete(cfg, s, f))
    if cfg.model.is_sklearn:
        log.info("%s: a scikit-learn model has no TTA; predictions come from training", cfg.name)
        return gather(cfg, comp, folds)
    tokenizer = build_tokenizer(cfg.model)  # first: see build_accelerator's gc.freeze
    accelerator = build_accelerator(cfg.train.mixed_precision, multiprocess="pipeline predict")
    with holding_images(competition_images(comp)):  # the test images once for every fold
        for seed, fold in jobs:
            with fold_lock(cfg, seed, fold) as holder:
                if holder is not None:
                    raise FoldBusy(f"{fold_dir(cfg, seed, fold)} is held by {holder}; run "
                                   "predict again once it finishes")
                if not predictions_current(cfg, seed, fold):
                    predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
            fold_score(cfg, comp, folds, seed, fold)
    return gather(cfg, comp, folds)
