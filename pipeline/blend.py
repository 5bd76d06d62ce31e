"""The blend stage: many runs of one competition -> ``blends/<name>/``.

``run`` checks that the member runs share ids, folds and target layout, fits a blender
from :mod:`pipeline.ensemble` on their OOF predictions, scores it in-sample and by nested CV
(the blender re-tuned without each fold, scored on that fold), and writes a folder that
later stages read like a run::

    run.json          RunMeta of the members, with the blend's name and hash
    oof.parquet       id, fold, blended OOF predictions, out of fold: tuned weights publish
                      the nested CV's held-out blend (:func:`published_oof`)
    test.parquet      id, blended test predictions
    weights.json      member -> weight, and the members with weight zero
    blend.json        members, method and parameters: a later blend of other members under
                      this name is refused (see :mod:`pipeline.blend_folder`)
    cv.json           the objective tuned (optuna, hill_climb: ``fold_mean`` or ``pooled``),
                      in-sample and nested-CV scores, the published OOF's (``oof``: its
                      score, per fold, and ``from``: nested or blender), each member's, and for
                      label-based metrics the post-processing's nested score and decision
    diversity.json    each member's score and the correlation matrix of their OOF
    postprocess.json  thresholds / class weights, for label-based metrics, written only where
                      they improve the nested CV score (``postprocess="auto"``)
    study.journal     the Optuna study (method ``optuna`` with default storage): Optuna's
                      journal file, resumed by a later run of the same name and settings
                      (more trials continue it); an older blend's ``study.db`` (SQLite) is
                      imported into it once and then left alone
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline import submit
from pipeline.artifacts import (
    RunMeta,
    read_meta,
    write_json,
    write_meta,
    write_parquet,
)
from pipeline.blend_checks import build_checked, check_blend_request, check_fits
from pipeline.blend_folder import claim_name, clear, for_writing, write_identity
from pipeline.blend_members import Members, load_members
from pipeline.ensemble import (
    BLENDERS,
    POSTPROCESS_FILE,
    Blender,
    NestedCV,
    PostProcess,
    WeightedBlender,
    diversity_report,
    fit_postprocess,
    format_report,
    nested_cv,
)
from pipeline.ensemble._objective import FOLD_MEAN, describe, resolve_objective
from pipeline.ensemble._postprocess import check_postprocess_mode, postprocess_report
from pipeline.ensemble._tuning_cost import tuning_affordable
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import Metric, get_metric
from pipeline.predicted_here import record_here
from pipeline.replaced_submission import pop_own_submission
from pipeline.run_targets import targets_for_meta

logger = logging.getLogger("pipeline.blend")

_OUTPUTS = ("oof.parquet", "test.parquet", "weights.json", "cv.json")
STUDY_FILE = "study.journal"
_LEGACY_STUDY_FILE = "study.db"  # the default storage before the journal


def blend_hash(members: Members, method: str, params: dict[str, Any]) -> str:
    """Identity of a blend: member names, their predictions' content (a member predicted
    again, not retrained, is another member), method and parameters."""
    content = hashlib.sha256()
    for part in (members.oof, members.test, members.folds):
        content.update(np.ascontiguousarray(part).tobytes())
    data = {
        "members": members.names,
        "predictions": content.hexdigest(),
        "method": method,
        "params": params,
    }
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_complete(folder: Path, config_hash: str, members: RunMeta) -> bool:
    if not (folder / "run.json").is_file() or not all((folder / f).is_file() for f in _OUTPUTS):
        return False
    done = read_meta(folder)
    record_here(done, folder, members.competition_dir)  # copied, or members predicted anew
    return done.config_hash == config_hash


def tuned_objective(method: str, params: dict[str, Any], metric: Metric,
                    folds: np.ndarray) -> str | None:
    """What ``method`` tunes its weights on, 'fold_mean' or 'pooled' (its ``objective``
    parameter resolved for the metric and the members' folds); None for a method that tunes
    no weights. A value that is no objective is a one-line ConfigError."""
    cls = BLENDERS.get(method)
    if "objective" not in cls._get_param_names():
        return None
    try:
        return resolve_objective(params.get("objective", "pooled"), metric, folds, cls.__name__)
    except ValueError as err:
        raise ConfigError(f"blend method {method!r}: {err}") from None


def _blender_params(
    method: str, meta: RunMeta, settings: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    accepted = BLENDERS.get(method)._get_param_names()
    merged = {"metric": get_metric(meta.metric, meta.scored_values), **settings}
    merged = {k: v for k, v in merged.items() if k in accepted}
    return {**merged, **params}


def _per_fold(metric: Metric, y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> dict[str, float]:
    return {str(f): metric(y[folds == f], p[folds == f]) for f in np.unique(folds)}


def _weights_report(blender: Blender, names: list[str], method: str) -> dict[str, Any]:
    report: dict[str, Any] = {"method": method, "weights": None, "zero_weight": []}
    if isinstance(blender, WeightedBlender):
        weights = blender.member_weights_
        report["weights"] = {n: float(w) for n, w in zip(names, weights, strict=True)}
        report["zero_weight"] = [n for n, w in zip(names, weights, strict=True) if w == 0]
        if blender.weights_.ndim == 2:
            per_class = zip(names, blender.weights_, strict=True)
            report["per_class"] = {n: w.tolist() for n, w in per_class}
    return report


def run(
    runs: Sequence[str | Path],
    method: str = "optuna",
    name: str | None = None,
    blends_dir: str | Path = "blends",
    n_trials: int = 300,
    storage: str | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    targets: np.ndarray | None = None,
    postprocess: str = "auto",
    overwrite: bool = False,
    new_version: bool = False,
    submissions_dir: str | Path = "submissions",
) -> Path:
    """Blend the runs' predictions with ``method`` into ``<blends_dir>/<name>/``; return it.

    Args:
        runs: Run (or blend) folders of one competition.
        method: A registered blender: mean, optuna, hill_climb, rank, power, stacking.
        name: Blend folder name; default ``<method>-<hash>``.
        blends_dir: Parent of blend folders.
        n_trials: Optuna trials (blenders that tune with Optuna).
        storage: Optuna storage: a journal file path or an RDB URL (``sqlite:///...``,
            ``postgresql://...``); default the journal file ``<blends_dir>/<name>/study.journal``.
            The study's name leaves out ``n_trials``, so a later run with more trials
            continues it.
        seed: Seed of the blender's randomness.
        params: More blender hyperparameters (e.g. ``{"per_class": True}``); ``objective``
            (optuna, hill_climb): ``pooled`` (default: the metric of the pooled OOF),
            ``fold_mean`` (the mean of the folds' scores) or ``auto`` (``fold_mean`` under a
            metric that ranks rows: ROC AUC and the like). A stored study is resumed only
            under its objective.
        targets: Encoded OOF targets; default read from the members' competition.
        postprocess: Label metrics: ``auto`` applies the tuned thresholds / class weights
            only where the nested CV score with them beats the one without; ``on``/``off``.
        overwrite: Replace a blend of other members or another method under ``name``.
        new_version: Write such a blend as ``<name>-v2`` (the first free, or the one that
            already holds this blend).
        submissions_dir: Where ``submit`` wrote ``<name>.csv``: a file there that holds the
            replaced blend's submission is written again from the new one.

    Raises:
        ConfigError: ``name`` holds a blend of other members or another method (neither
            ``overwrite`` nor ``new_version``), ``postprocess`` is not a mode, or
            ``method``, ``params``, ``name``, ``blends_dir`` or ``storage`` cannot be used
            (:func:`pipeline.blend_checks.check_blend_request`).
        DataError: The runs do not share ids, folds or target layout.
    """
    check_blend_request(method, name, blends_dir, storage)
    members = load_members(runs)
    meta, params = members.meta, dict(params or {})
    check_fits(method, meta.metric, members.folds, runs[0], meta.missing_targets)
    settings = {"n_trials": n_trials, "seed": seed}
    tuning = {**settings, **params}
    metric = get_metric(meta.metric, meta.scored_values)
    objective = tuned_objective(method, params, metric, members.folds)
    # the resolved objective, not the parameter, names what was tuned: 'pooled' hashes as
    # every blend did before the folds' mean, which is new
    untuned = {k: v for k, v in tuning.items() if k != "objective"}
    hashed = {**untuned, "postprocess": check_postprocess_mode(postprocess)}
    if objective == FOLD_MEAN:
        hashed["objective"] = objective
    if not BLENDERS.get(method).oof_held_out:  # its oof.parquet was in-sample before: redo it
        hashed["oof"] = "nested"
    config_hash = blend_hash(members, method, hashed)
    name, replace = claim_name(Path(blends_dir), name or f"{method}-{config_hash[:8]}",
                               members.names, method, overwrite, new_version)
    folder = Path(blends_dir) / name
    if _is_complete(folder, config_hash, meta):
        logger.info("blend %s is up to date (hash %s); skipping", folder, config_hash)
        return folder
    stale = pop_own_submission(for_writing(folder), submissions_dir)  # before it is touched
    if replace:
        clear(folder)
    # the blender stores a study of the folds' mean as '<study_name>-fold-mean'
    budget_free = {k: v for k, v in untuned.items() if k != "n_trials"}
    study_name = f"blend-{blend_hash(members, method, budget_free)}"
    default = storage is None and "storage" in BLENDERS.get(method)._get_param_names()
    settings["storage"] = str((folder / STUDY_FILE).resolve()) if default else storage
    settings["study_name"] = study_name
    blender = build_checked(method, **_blender_params(method, meta, settings, params))
    # checked before the folder is made: a refused blend leaves nothing behind
    y = np.asarray(targets) if targets is not None else targets_for_meta(meta)
    if len(y) != members.oof.shape[1]:
        raise DataError(f"{len(y)} targets for {members.oof.shape[1]} OOF rows of {runs[0]}: "
                        "the train file changed since; train the members again")
    folder.mkdir(parents=True, exist_ok=True)  # before the study opens its file
    if default and objective != FOLD_MEAN:  # study.db's trials were scored pooled
        legacy_name = f"blend-{blend_hash(members, method, untuned)}"  # its hash had no mode
        _import_legacy_study(folder, study_name, legacy_name)

    # the rule's search and its nested CV over many labels and rows can outlast the blend
    tune = not metric.needs_labels or tuning_affordable(
        f"blend {name}", meta.task, metric, y, members.oof.mean(axis=0),
        len(np.unique(members.folds)), postprocess)
    cv, oof, test, nested = _fit_and_score(blender, members, y, method, tune)
    if objective is not None:
        cv["objective"] = blender.objective_
    # the rule is tuned on the in-sample blend, as each nested fold's rule is tuned on its
    # inner blend's (the score that decides on it), and the test rows get the same weights
    pp = fit_postprocess(meta.task, metric, y, blender.oof_) if tune else None
    if pp is not None:
        cv["postprocess"] = postprocess_report(pp, nested.postprocessed or {}, nested.mean,
                                               postprocess)
        pp = pp if cv["postprocess"]["applied"] else None  # no postprocess.json: 0.5 / argmax
    weights = _weights_report(blender, members.names, method)
    diversity = diversity_report(members.names, members.oof, y,
                                 get_metric(meta.metric, meta.scored_values))
    _write_blend(folder, members, oof, test, cv, weights, diversity, pp)
    write_identity(folder, members.names, runs, method, hashed)
    leaky = any(read_meta(Path(r)).leaky for r in runs)  # a leaky member's CV is optimistic
    write_meta(folder, dataclasses.replace(meta, name=name, config_hash=config_hash,
                                           leaky=leaky))
    _log_report(folder, cv, weights)
    logger.info("%s", format_report(diversity))
    if stale is not None:
        submit.run(folder, name, submissions_dir)
        logger.info("%s: written again from the new blend", stale)
    return folder


def _import_legacy_study(folder: Path, study_name: str, legacy_name: str) -> None:
    """Read a ``study.db`` left by an older blend (the default storage was SQLite, with
    ``n_trials`` in the study name) once: its study of these exact settings is copied into
    the journal, where tuning continues; any other study in it is not used."""
    legacy = folder / _LEGACY_STUDY_FILE
    if not legacy.is_file():
        return
    storage = JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))
    if any(s.study_name == study_name for s in storage.get_all_studies()):
        return  # imported by an earlier run, or tuned in the journal since
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        old = optuna.load_study(study_name=legacy_name, storage=f"sqlite:///{legacy.resolve()}")
        trials = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        new = optuna.create_study(storage=storage, study_name=study_name, direction=old.direction)
        new.add_trials(trials)
    except KeyError:
        logger.info("%s (SQLite, from an older blend) holds no study of these settings; it is "
                    "not used: the study starts in %s", legacy, STUDY_FILE)
        return
    except Exception as err:  # not a study database, or one an older Optuna wrote
        logger.warning("%s could not be read (%s); it is not used: the study starts in %s",
                       legacy, err, STUDY_FILE)
        return
    finally:
        optuna.logging.set_verbosity(verbosity)
    logger.info("imported the %d completed trials of %s (SQLite, from an older blend) into %s; "
                "the study continues there and %s is no longer written", len(trials), legacy,
                STUDY_FILE, legacy.name)


def _fit_and_score(
    blender: Blender, members: Members, y: np.ndarray, method: str, tune: bool = True,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, NestedCV]:
    """Fit the blender on the members' OOF. Returns the scores of cv.json (in-sample, nested
    CV re-tuned without each fold, the published OOF, each member, equal weights), the OOF
    the blend publishes (:func:`published_oof`), its test predictions, and the nested CV
    (``tune``: with each fold's post-processing tuned)."""
    meta, folds = members.meta, members.folds
    metric = get_metric(meta.metric, meta.scored_values)
    member_scores = {n: metric(y, p) for n, p in zip(members.names, members.oof, strict=True)}
    equal = metric(y, members.oof.mean(axis=0))
    blender.fit(members.oof, y, folds)
    test = blender.predict(members.test)
    nested = nested_cv(blender, members.oof, y, folds, metric,
                       members.meta.task if tune else None)
    oof, source = published_oof(blender, nested)
    best = (max if metric.greater_is_better else min)(member_scores, key=member_scores.get)
    cv = {
        "metric": metric.name,
        "direction": metric.direction,
        "method": method,
        "in_sample": {"score": metric(y, blender.oof_),
                      "per_fold": _per_fold(metric, y, blender.oof_, folds)},
        "nested": nested.to_json(),
        "oof": {"from": source, "score": metric(y, oof), "per_fold": _per_fold(metric, y, oof,
                                                                             folds)},
        "members": member_scores,
        "best_member": {"name": best, "score": member_scores[best]},
        "equal_weights": equal,
    }
    return cv, oof, test, nested


def published_oof(blender: Blender, nested: NestedCV) -> tuple[np.ndarray, str]:
    """The OOF the blend writes to ``oof.parquet`` for what reads it as a run's (a blend of
    blends, the leaderboard, the report, the clip): out of fold, and where it comes from.

    Tuned weights (optuna, hill_climb) blend the OOF they were fitted on: that in-sample blend
    is optimistic (see ``docs/benchmarks.md``), and a blend of it over-weights it, so the nested
    CV's held-out blend is published (each fold blended by weights fitted without it); the
    in-sample score stays in ``cv.json``. Fixed weights and stacking publish their own OOF,
    which saw no label of its rows (rank averages over every row, not one fold's).
    """
    if blender.oof_held_out:
        return blender.oof_, "blender"
    return nested.held_out, "nested"


def _write_blend(folder: Path, members: Members, oof: np.ndarray, test: np.ndarray,
                 cv: dict[str, Any], weights: dict[str, Any], diversity: dict[str, Any],
                 pp: PostProcess | None) -> None:
    """The blend folder's files, each written atomically (run.json last, by the caller)."""
    meta = members.meta
    if pp is not None:
        write_json(folder / POSTPROCESS_FILE, pp.to_json())
    else:
        (folder / POSTPROCESS_FILE).unlink(missing_ok=True)
    cols = meta.pred_columns
    oof_frame = pd.DataFrame(oof, columns=cols)
    oof_frame.insert(0, "fold", members.folds)
    oof_frame.insert(0, meta.id_column, members.oof_ids.to_numpy())
    test_frame = pd.DataFrame(test, columns=cols)
    test_frame.insert(0, meta.id_column, members.test_ids.to_numpy())
    write_parquet(folder / "oof.parquet", oof_frame)
    write_parquet(folder / "test.parquet", test_frame)
    write_json(folder / "weights.json", weights)
    write_json(folder / "cv.json", cv)
    write_json(folder / "diversity.json", diversity)


def _log_report(folder: Path, cv: dict[str, Any], weights: dict[str, Any]) -> None:
    logger.info("blend %s (%s, %s %s)", folder, cv["method"], cv["metric"], cv["direction"])
    if "objective" in cv:
        logger.info("  weights tuned on %s", describe(cv["objective"], cv["metric"]))
    for member, score in cv["members"].items():
        w = weights["weights"]
        shown = f"weight {w[member]:.3f}" if w is not None else "stacked"
        logger.info("  %-30s %.6f  %s", member, score, shown)
    if weights["zero_weight"]:
        logger.info("  weight zero: %s", ", ".join(weights["zero_weight"]))
    logger.info(
        "  equal weights %.6f | best member %.6f | in-sample %.6f | nested CV %.6f (pooled %.6f)",
        cv["equal_weights"],
        cv["best_member"]["score"],
        cv["in_sample"]["score"],
        cv["nested"]["mean"],
        cv["nested"]["pooled"],
    )
    logger.info("  oof.parquet: %s (%.6f)", "the nested CV's held-out blend" if
                cv["oof"]["from"] == "nested" else "the blend's OOF", cv["oof"]["score"])
    if "postprocess" in cv:
        pp = cv["postprocess"]
        logger.info("  post-processing: nested CV %.6f with, %.6f without (in-sample %.6f from "
                    "%.6f) -> %s (%s)", pp["nested"]["mean"], pp["nested_without"],
                    pp["in_sample"], pp["default_score"],
                    "applied" if pp["applied"] else "not applied", pp["decision"])
