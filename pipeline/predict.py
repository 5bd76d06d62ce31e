"""Predict stage: fold checkpoints x test-time augmentation -> OOF and test predictions.

Reruns only what the ``predict`` section changed: a fold whose predictions were made under
the current section is kept; every fold must have been trained under this config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.artifacts import read_json
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.decoded import check_images
from pipeline.data.held_images import competition_images, holding_images
from pipeline.data_files import changed_files
from pipeline.engine.accelerator import build_accelerator
from pipeline.errors import DataError
from pipeline.fold_lock import FoldBusy, fold_lock
from pipeline.full_fit import length_current
from pipeline.jobs import predict_fold
from pipeline.models.network import build_tokenizer
from pipeline.prediction_state import stale_parts
from pipeline.runs import (
    FULL_FIT,
    fold_complete,
    fold_dir,
    fold_score,
    gather,
    load_folds,
    trained_on,
)

log = logging.getLogger(__name__)


def _refuse_untrained(cfg: ExperimentConfig, jobs: list[tuple[int, int]],
                      done: Callable[[int, int], bool]) -> None:
    for seed, fold in jobs:
        if not done(seed, fold):
            raise DataError(f"{fold_dir(cfg, seed, fold)} is not trained under this config and "
                            "these train/test files: run the train stage first")


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> float:
    """Refresh every fold's predictions (and every full model's, under 'train.full_fit') for
    the current ``predict`` section and regather."""
    comp = comp or load_competition(cfg.competition)
    jobs = [(seed, fold) for seed in cfg.train.seeds for fold in range(cfg.folds.n_splits)]
    jobs += [(seed, FULL_FIT) for seed in cfg.train.seeds if cfg.train.full_fit]
    # a fold that never trained is refused before load_folds makes the folds file (a refusal
    # writes nothing); one that trained is then checked against its records, the folds too
    _refuse_untrained(cfg, jobs, lambda s, f: (fold_dir(cfg, s, f) / "metrics.json").is_file())
    if not cfg.model.is_sklearn and "image" in cfg.model.modalities and any(
            stale_parts(cfg, s, f) for s, f in jobs):
        # an unreadable image (a hidden test set's) refused before load_folds writes a folds
        # file, all such images in one line; they were found one at a time by the fold that
        # read them. Decoded into the cache that predicting then reads from.
        check_images(competition_images(comp))
    folds = load_folds(cfg, comp)
    for seed, fold in jobs:
        _check_trained(cfg, seed, fold)
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
                stale = stale_parts(cfg, seed, fold)
                if stale:
                    predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer,
                                 parts=stale)
            if fold != FULL_FIT:  # a full model has no held-out rows to score
                fold_score(cfg, comp, folds, seed, fold)
    return gather(cfg, comp, folds)


def _check_trained(cfg: ExperimentConfig, seed: int, fold: int) -> None:
    """Refuse a fold not trained under this config on these inputs, its files left as they
    are: predicting never deletes what training made (a fold found stale is retrained, and
    reset, by the train stage alone). A network's fold predicts a changed test file with its
    weights as they are, those of a consistency or pseudo-label run included (the hidden
    test set of a code competition, predicted by weights trained beside the public one); a
    scikit-learn fold predicts as it trains."""
    parts = trained_on(cfg)
    if not cfg.model.is_sklearn:
        parts = tuple(p for p in parts if p != "test")
    folder = fold_dir(cfg, seed, fold)
    if fold == FULL_FIT and fold_complete(cfg, seed, fold, reset=False, parts=parts) and (
            not length_current(cfg, seed)):
        raise DataError(f"{folder}: its folds were trained again since and choose another "
                        "length: run the train stage first (it trains the full model again)")
    if fold_complete(cfg, seed, fold, reset=False, parts=parts):
        return
    done = folder / "metrics.json"
    try:
        record = read_json(done) if done.is_file() else {}
    except ValueError:  # damaged: nothing to name but that
        record = {}
    changed = changed_files(record.get("data"), cfg, parts, fold) if record else []
    why = (f"its {' and '.join(changed)} file changed since it trained" if changed
           else "it is not trained under this config, or its files are damaged")
    raise DataError(f"{folder}: {why}: run the train stage first (it trains the fold again)")
