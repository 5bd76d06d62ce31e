"""Train stage: for each seed and fold, train on the other folds, predict the held-out fold
(OOF) and the test set, then gather every fold into the run's ``oof.parquet`` and
``test.parquet``. Finished folds are skipped; a fold cut off mid-way resumes."""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from pipeline import pseudo as pseudo_stage
from pipeline.artifacts import write_json
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data.decoded import check_images
from pipeline.data.held_images import competition_images, holding_images
from pipeline.data.image_scale import upscale_warning
from pipeline.data.tabular import UNSEEN_WARN_SHARE, unseen_shares
from pipeline.data.text_features import text_values, unspaced
from pipeline.data.unknown_tokens import check_unknown_tokens
from pipeline.data_files import fold_digests
from pipeline.engine.accelerator import build_accelerator
from pipeline.engine.distributed import agree, held_by_main, is_main
from pipeline.engine.encoder_lr import pretrained_lr_warnings
from pipeline.engine.recipe_warnings import recipe_warnings
from pipeline.errors import ConfigError, DataError
from pipeline.executor import Executor, Job, build_executor
from pipeline.file_digests import file_digests
from pipeline.fold_lock import FoldBusy, fold_holders, fold_lock
from pipeline.fold_start import start_fold
from pipeline.full_fit import start_full_fit
from pipeline.jobs import predict_fold, train_sklearn_fold
from pipeline.jobs.gbdt import train_gbdt_fold
from pipeline.jobs.multiprocess import check_multiprocess
from pipeline.jobs.network import fit_network_fold
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES
from pipeline.models.network import (
    build_tokenizer,
    check_max_length,
    check_tokenizers,
    check_vocab,
    tokenizer_dir,
)
from pipeline.multiple_choice import ordered_options
from pipeline.prediction_state import predictions_current
from pipeline.replaced_submission import pop_own_submission
from pipeline.runs import (
    FOLD_FORMAT,
    FULL_FIT,
    PREDICTION_FILES,
    TRAINED_FILES,
    fold_complete,
    fold_dir,
    fold_label,
    fold_score,
    gather,
    holds_config,
    load_folds,
    prepare_run_dir,
)

log = logging.getLogger(__name__)


def run_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator | None, tokenizer: Any,
) -> float | None:
    """Train (or skip) one fold, make sure its predictions are current; returns its score
    (NaN: a full model, which has no held-out rows), or None when another process holds the
    fold (it is left to that process)."""
    with held_by_main(lambda: fold_lock(cfg, seed, fold)) as holder:  # rank 0's, shared
        if holder is not None:
            log.info("%s: held by %s; left to it", fold_label(cfg, seed, fold), holder)
            return None
        return _run_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)


def _run_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator | None, tokenizer: Any,
) -> float:
    # a full model: the length its folds choose now (one made for another is dropped)
    length = start_full_fit(cfg, seed) if fold == FULL_FIT else None
    # in a multi-process launch rank 0 decides from the files it writes (agree), the
    # others train alongside and never write
    if agree(fold_complete, cfg, seed, fold) and not agree(_retrain_for_columns, cfg, comp,
                                                           seed, fold) and not agree(
            _retrain_for_rows, cfg, comp, folds, seed, fold):
        log.info("%s: complete, skipped", fold_label(cfg, seed, fold))
    else:
        if cfg.model.encoders[0].kind in GBDT_LIBRARIES:
            result = train_gbdt_fold(cfg, comp, folds, seed, fold,
                                     length["trees"] if length is not None else None)
        elif cfg.model.is_sklearn:
            result = train_sklearn_fold(cfg, comp, folds, seed, fold)
        else:
            assert accelerator is not None
            agree(start_fold, cfg, seed, fold)  # no resume point of other inputs
            result = _train_and_predict(cfg, comp, folds, seed, fold, accelerator, tokenizer,
                                        length["epochs"] if length is not None else None)
        # checksums of what training wrote (scikit-learn folds: their predictions too)
        vouched = TRAINED_FILES + (PREDICTION_FILES if cfg.model.is_sklearn else ())
        if is_main():
            write_json(fold_dir(cfg, seed, fold) / "metrics.json",
                       {"config_hash": cfg.train_hash(), "format": FOLD_FORMAT, **result,
                        "data": fold_digests(cfg, fold),
                        "files": file_digests(fold_dir(cfg, seed, fold), vouched)}
                       | ({"length": length} if length is not None else {}))
    if not cfg.model.is_sklearn and not agree(predictions_current, cfg, seed, fold):
        assert accelerator is not None
        predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
    return math.nan if fold == FULL_FIT else agree(fold_score, cfg, comp, folds, seed, fold)


def _retrain_for_columns(cfg: ExperimentConfig, comp: Competition, seed: int,
                        fold: int) -> bool:
    """Whether a finished fold must train again because its predictions name other columns
    than the competition's now (class labels read otherwise since it ran: '3.0' labels are
    read as 3): gathering them was a KeyError traceback. Its files of the old columns (the
    last epoch's OOF beside the predictions) are all written again."""
    import pyarrow.parquet as pq

    folder = fold_dir(cfg, seed, fold)
    try:
        names = pq.read_schema(folder / "oof.parquet").names
    except (OSError, ValueError):  # none yet (a network predicts below) or damaged
        return False
    if set(comp.pred_columns) <= set(names):
        return False
    log.warning("%s: its predictions have columns %s, the competition's are now %s; it is "
                "trained again", fold_label(cfg, seed, fold),
                [n for n in names if n not in (cfg.competition.id_column, "fold")],
                comp.pred_columns)
    for name in ("metrics.json", "predictions.json", "last.pt"):
        (folder / name).unlink(missing_ok=True)
    return True


def _retrain_for_rows(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int,
                      fold: int) -> bool:
    """Whether a finished fold must train again because the folds file now gives it other
    validation rows than its predictions hold (rewritten under the same name: edited, or
    ``pipeline adversarial --valid-fold NAME --overwrite``). Its model trained on some of
    them, and scoring was a ValueError traceback (or, at equal sizes, silently the wrong
    rows). A fold recorded since also notes its rows' digest (:func:`fold_complete`)."""
    import pyarrow.parquet as pq

    folder = fold_dir(cfg, seed, fold)
    id_col = cfg.competition.id_column
    try:
        ids = pq.read_table(folder / "oof.parquet", columns=[id_col]).column(0).to_pylist()
    except (OSError, ValueError, KeyError):  # none yet (a network predicts below) or damaged
        return False
    now = comp.train[id_col].astype(str).to_numpy()[folds == fold]
    if sorted(map(str, ids)) == sorted(now):
        return False
    log.warning("%s: the folds file gives it other validation rows than it was trained "
                "for; it is trained again", fold_label(cfg, seed, fold))
    for name in ("metrics.json", "predictions.json", "last.pt", "best.pt", "preprocess.json",
                 "tabular.joblib"):  # fitted on the old training rows
        (folder / name).unlink(missing_ok=True)
    return True


def _train_and_predict(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any, epochs: int | None = None,
) -> dict[str, Any]:
    """Train a network fold (a full model: for ``epochs``) and predict with it while it is in
    memory; logs where the fold's time went (the competitor's GPU hours: training, then
    predicting and writing files)."""
    start = time.perf_counter()
    result, trained = fit_network_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer,
                                       epochs)
    fitted = time.perf_counter()
    try:
        predict_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer, trained)
    finally:
        if trained is not None:  # the fit's last checkpoints land while it predicts
            trained.finish()
    done = time.perf_counter()
    # the history's trained epochs: SWA appends a scored entry of its averaged weights
    trained_epochs = [e for e in result["epochs"] if not e.get("swa")]
    epochs = sum(e.get("seconds", 0.0) for e in trained_epochs)
    log.info("%s: %.1f s: %.1f s in %d epoch(s), %.1f s setting up, %.1f s predicting "
             "and writing", fold_label(cfg, seed, fold), done - start, epochs,
             len(trained_epochs), fitted - start - epochs, done - fitted)
    return result


def run(cfg: ExperimentConfig, comp: Competition | None = None,
        overwrite: bool = False, executor: Executor | None = None) -> float:
    """Train every (seed, fold) not yet complete and gather the run; returns the OOF score.
    ``overwrite``: retrain a run folder that holds another config. ``executor``: where the
    fold jobs run (default: the one ``cfg.executor`` names)."""
    check_multiprocess(cfg)  # on every rank of a multi-process launch, before any write
    cfg = agree(lambda: cfg)  # rank 0's (e.g. its --new-version name) for every rank
    comp = comp or load_competition(cfg.competition)
    executor = executor or build_executor(cfg.executor)  # a bad address: refused before writing
    folds = agree(prepare, cfg, comp, overwrite)  # rank 0 writes the run folder
    jobs = fold_jobs(cfg, comp, folds, executor)
    with holding_images(competition_images(comp)):  # decoded, resized, moved once a run
        busy = [job.tag for job, score in executor.run(
            [j for j in jobs if j.tag[1] != FULL_FIT]) if score is None]
        if not busy:  # after every fold: a full model's length is read from their records
            busy = [job.tag for job, score in executor.run(
                [j for j in jobs if j.tag[1] == FULL_FIT]) if score is None]
    return agree(finish, cfg, comp, folds, busy)


def _check_token_texts(cfg: ExperimentConfig, comp: Competition, tokenizer: Any) -> None:
    """The train texts an 'hf:' encoder's tokenizer reads (:mod:`pipeline.data.unknown_tokens`)."""
    enc = next((e for e in cfg.model.encoders if e.kind == "hf"), None)
    if enc is not None:
        check_unknown_tokens(tokenizer, comp.train, comp.cfg.text_columns, enc.name,
                             str(tokenizer_dir(cfg.model)))


def prepare(cfg: ExperimentConfig, comp: Competition, overwrite: bool = False) -> np.ndarray:
    """Everything before the fold jobs: input checks, folds, the run folder, pseudo-labels;
    returns the folds. Refusals come here, before any job starts."""
    problem = None if cfg.model.is_sklearn else cfg.train.outputs_mismatch(comp.n_outputs)
    if problem is not None:  # known only once the classes are read; refused before any work
        raise ConfigError(problem)
    # a refused pseudo source stops the run before anything is written
    leaky = pseudo_stage.source_leaky(cfg) if cfg.pseudo is not None else False
    numbered = {"train": "its rows are numbered from 1 as ids",
                "test": "its rows take the sample submission's ids, in order"}
    for split in comp.numbered_ids:
        log.warning("%s: the %s file has no id column %r: %s", cfg.name, split,
                    comp.cfg.id_column, numbered[split])
    if "tabular" in cfg.model.modalities:
        _check_features(cfg, comp)
        _warn_unseen_categories(cfg, comp)
    if "image" in cfg.model.modalities and not holds_config(cfg):
        # a first start: a corrupt image refused before the folds and the run folder are
        # written (a rerun of this config finds its run folder made, and need not decode
        # every image when every fold is done); decoded here once for the folds in this
        # process, only opened when other processes train them
        images = competition_images(comp)
        # said first: on a large set this is minutes of a first start before any other line
        log.info("%s: reading the %d images before anything is written (an unreadable one is "
                 "refused first)", cfg.name, len(set(map(str, images))))
        check_images(images, decode=cfg.executor.name == "local")
        note = upscale_warning(cfg.model.image_size, "image_size" in cfg.model.model_fields_set,
                               images)
        if note:
            log.warning("%s: %s", cfg.name, note)
    if not cfg.model.is_sklearn:
        check_max_length(cfg.model)
        tokenizer_dir(cfg.model)  # a missing tokenizer folder refused before any write
        if tokenizer_dir(cfg.model) is not None:
            tokenizer = build_tokenizer(cfg.model)
            # first: another model's tokenizer is the cause a too small table only hints at
            check_tokenizers(cfg.model, tokenizer)
            check_vocab(cfg.model, tokenizer)
            _check_token_texts(cfg, comp, tokenizer)
        ordered_options(cfg.model.option_columns, comp.classes)  # which option is which class
    folds = load_folds(cfg, comp)
    if overwrite and not holds_config(cfg):  # its submission is the replaced run's
        held = fold_holders(cfg.run_dir)
        if held:  # replaced under it, its folds would land in the new run
            raise FoldBusy(f"{cfg.run_dir} is being trained by another process ({held[0]}"
                           f"{f' and {len(held) - 1} more fold(s)' if len(held) > 1 else ''}"
                           "): stop it before --overwrite replaces the run")
        pop_own_submission(cfg.run_dir, cfg.submissions_dir, "run", cfg.name)
    prepare_run_dir(cfg, comp, leaky, overwrite)
    if "tabular" not in cfg.model.modalities:  # after the refusals: said of a run that starts
        _warn_unread_columns(cfg, comp)
    if cfg.pseudo is not None:
        pseudo_stage.run(cfg, comp)
    if not cfg.model.is_sklearn:
        rows = len(comp.train) * (cfg.folds.n_splits - 1) // cfg.folds.n_splits
        for note in [*recipe_warnings(cfg.train, rows),
                     *pretrained_lr_warnings(cfg.model, cfg.train)]:
            log.warning("%s: %s", cfg.name, note)
    return folds


def fold_jobs(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray,
              executor: Executor) -> list[Job]:
    """One job per (seed, fold), then one per seed's full model under 'train.full_fit'
    (fold :data:`FULL_FIT`). In this process the jobs share one Accelerator and tokenizer; a
    remote job builds its own from the config (:func:`fold_job`)."""
    pairs = [(seed, fold) for seed in cfg.train.seeds for fold in range(cfg.folds.n_splits)]
    pairs += [(seed, FULL_FIT) for seed in cfg.train.seeds if cfg.train.full_fit]
    keys = [f"{cfg.name} seed{seed}/{'full' if fold == FULL_FIT else f'fold{fold}'}"
            for seed, fold in pairs]
    if not executor.in_process:
        gpus = 0.0 if cfg.model.is_sklearn else cfg.executor.gpus
        return [Job(key, functools.partial(fold_job, cfg, seed, fold), cfg.executor.cpus, gpus,
                    (seed, fold)) for key, (seed, fold) in zip(keys, pairs, strict=True)]
    tokenizer = None if cfg.model.is_sklearn else build_tokenizer(cfg.model)
    accelerator = None if cfg.model.is_sklearn else build_accelerator(cfg.train.mixed_precision)
    if accelerator is not None:
        log.info("%s: training on %s (mixed precision: %s)", cfg.name, accelerator.device,
                 accelerator.mixed_precision)
    return [Job(key, functools.partial(run_fold, cfg, comp, folds, seed, fold, accelerator,
                                       tokenizer), tag=(seed, fold))
            for key, (seed, fold) in zip(keys, pairs, strict=True)]


def fold_job(cfg: ExperimentConfig, seed: int, fold: int) -> float | None:
    """One (seed, fold) on a remote worker: reads the competition and the folds the driver
    wrote, builds its own Accelerator, and trains like :func:`run_fold`."""
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    tokenizer = None if cfg.model.is_sklearn else build_tokenizer(cfg.model)
    accelerator = None if cfg.model.is_sklearn else build_accelerator(cfg.train.mixed_precision)
    with holding_images(competition_images(comp)):  # its training and its predictions
        return run_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)


def finish(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray,
           busy: list[tuple[int, int]]) -> float:
    """Gather the run once every fold is done; refuse while ``busy`` (seed, fold) pairs are
    another process's."""
    if busy:
        raise FoldBusy(
            f"{len(busy)} fold(s) of {cfg.name} (seed, fold: {busy}) are being trained by "
            "another process; this one trained the rest. Run train again once it finishes "
            "to gather the run")
    score = gather(cfg, comp, folds)
    if cfg.train.full_fit:
        log.info("%s: test predictions: %s (train.full_fit_combine); the OOF and its score are "
                 "the folds'", cfg.name, "the full models' mean" if cfg.train.full_fit_combine
                 == "replace" else "the mean of the fold models' and the full models' means")
    return score


def _warn_unseen_categories(cfg: ExperimentConfig, comp: Competition) -> None:
    """Say which categorical columns have many test values that train never shows: those rows
    all get the 'unknown' code, and CV (train rows only) cannot see what that costs."""
    shares = unseen_shares(comp.train, comp.test, comp.categorical_columns)
    for column, share in shares.items():
        if share > UNSEEN_WARN_SHARE:
            distinct = comp.train[column].nunique()
            # a name, a cabin code, a free text: one value a row is no category to learn
            hint = (f" ({distinct} distinct values in {len(comp.train)} train rows: an id, "
                    "code or text, as a category it says nothing of new rows; leave it out "
                    "with 'competition.feature_columns', or read it as 'competition."
                    "text_columns', codes ('B/12/P') with 'model.tabular.text.analyzer: "
                    "char_wb')") if distinct > 0.5 * len(comp.train) else ""
            log.warning("%s: %.0f%% of the test rows' values of categorical column %r never "
                        "occur in train; they are encoded as unknown%s", cfg.name, 100 * share,
                        column, hint)


def _warn_unread_columns(cfg: ExperimentConfig, comp: Competition) -> None:
    """Name the table columns an image or text network leaves unread: metadata beside the
    texts or images (a score, an age, a site) reaches the model only through a tabular
    encoder, and was dropped without a word."""
    unread = comp.feature_columns
    if unread:
        log.warning("%s: no encoder reads column(s) %s: add an 'mlp' encoder beside the %s "
                    "encoder to read them, or list the columns to read in "
                    "'competition.feature_columns' ([] for none)", cfg.name, unread,
                    " and ".join(sorted(cfg.model.modalities)))


def _check_features(cfg: ExperimentConfig, comp: Competition) -> None:
    """Refuse train columns the test file lacks (unless told to drop them) and log which
    columns the model reads, and which of them as categories."""
    missing = comp.train_only_columns
    if missing and not cfg.competition.drop_train_only_columns:
        raise DataError(
            f"{Path(cfg.competition.dir) / cfg.competition.test_file}: column(s) {missing} of "
            "the train file are missing here, so no model can use them at prediction time. "
            "List 'competition.feature_columns' without them, or set "
            "'competition.drop_train_only_columns: true' to drop them")
    if missing:
        log.warning("%s: dropped train-only column(s) %s (not in the test file)", cfg.name,
                    missing)
    if comp.empty_columns:
        log.warning("%s: left out column(s) %s: empty in every train row", cfg.name,
                    comp.empty_columns)
    if comp.written_numbers:
        log.warning("%s: column(s) %s hold numbers written as text (a percent sign, "
                    "thousands separators, a money sign, one unit shared by every value, "
                    "or ISO dates: days since 1970-01-01, and their calendar parts as columns "
                    "'<column>:year', ':month', ':day', ':dayofweek', ':dayofyear', ':hour'): "
                    "read as numbers", cfg.name,
                    comp.written_numbers)
    if comp.test_empty_columns:
        log.warning("%s: left out column(s) %s: empty in every test row (the test "
                    "predictions could not use them)", cfg.name, comp.test_empty_columns)
    log.info("%s: %d feature column(s): %d numeric %s, %d categorical %s", cfg.name,
             len(comp.feature_columns), len(comp.numeric_columns), comp.numeric_columns,
             len(comp.categorical_columns), comp.categorical_columns)
    texts = cfg.competition.text_columns
    if texts and cfg.model.reads_tfidf:
        log.info("%s: text column(s) %s read as TF-IDF features ('model.tabular.text')",
                 cfg.name, texts)
        if cfg.model.tabular.text.analyzer == "word" and (unspaced_columns := [
                c for c in texts if unspaced(text_values(comp.train[c]))]):
            log.info("%s: text column(s) %s are written without spaces between words "
                     "(Chinese, Japanese): read as character 1..%d-grams, not as words",
                     cfg.name, unspaced_columns, max(cfg.model.tabular.text.ngrams, 2))
    elif texts and "text" not in cfg.model.modalities:
        log.warning("%s: no encoder reads text column(s) %s: add an 'hf:' encoder, or an "
                    "'mlp' (or use a whole tabular model), which reads them as TF-IDF",
                    cfg.name, texts)
