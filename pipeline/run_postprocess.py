"""A single run's post-processing: decision thresholds / class weights tuned on its own OOF.

Label metrics (F1, accuracy, MCC, QWK) score hard labels, and 0.5 / argmax is rarely their
best rule: on a binary F1 competition with a rare positive class the tuned threshold is worth
points. A blend tunes its rule in the blend stage; a run submitted alone gets the same rule,
tuned when the run is gathered (its OOF complete), under the blend's decision: with
``predict.postprocess: auto`` the rule is kept only where the nested CV (each fold's rule
tuned on the other folds' OOF, scored on that fold) beats 0.5 / argmax on the same folds.
The rule goes to ``<run>/postprocess.json``, which the submit stage applies; every gather
tunes again from the current OOF, so a retrained or re-predicted run never keeps a stale one.
A search estimated at over :data:`TUNING_BUDGET_S` (it would hold up every gather) is left out
under ``auto`` / ``off``, with a warning; ``on`` runs it regardless.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import write_json
from pipeline.config import ExperimentConfig
from pipeline.ensemble import (
    POSTPROCESS_FILE,
    PostProcess,
    build_blender,
    fit_postprocess,
    nested_cv,
)
from pipeline.ensemble._postprocess import postprocess_report
from pipeline.ensemble._tuning_cost import POSTPROCESS_BUDGET_S, default_rule, tuning_affordable
from pipeline.metrics import Metric

log = logging.getLogger(__name__)
_SHOWN = 8  # tuned values shown in the log (a multilabel run may have hundreds)
TUNING_BUDGET_S = POSTPROCESS_BUDGET_S  # estimated seconds above which auto / off skip it


def tune_run_postprocess(cfg: ExperimentConfig, metric: Metric, y: np.ndarray, oof: np.ndarray,
                         folds: np.ndarray) -> tuple[PostProcess | None, dict[str, Any] | None]:
    """The run's rule tuned on its OOF and the report for ``scores.json``. The rule is None
    where it is not applied (the submission labels with 0.5 / argmax); both are None when
    the metric scores probabilities or values. Writes nothing: see :func:`save_postprocess`.

    Args:
        cfg: The run's config: its task, and ``predict.postprocess`` (auto, on or off: see
            :func:`pipeline.ensemble._postprocess.choose_postprocess`).
        metric: The competition's metric, bound to its classes.
        y: Encoded OOF targets.
        oof: The run's OOF predictions ``(n, c)``.
        folds: The fold of every OOF row.
    """
    task, mode = cfg.competition.task, cfg.predict.postprocess
    if not metric.needs_labels:
        return None, None
    # every gather (each `pipeline train` of a finished run) would wait on a costly search
    if not tuning_affordable(cfg.name, task, metric, y, oof, len(np.unique(folds)), mode,
                             TUNING_BUDGET_S):
        return None, None
    rule = fit_postprocess(task, metric, y, oof)
    if rule is None:
        return None, None
    # the blend's own nested CV, over a one-member mean blend (the OOF itself): each fold's
    # rule is tuned on the other folds' rows only, as the blend stage tunes it
    nested = nested_cv(build_blender("mean"), [oof], y, folds, metric, task)
    report = postprocess_report(rule, nested.postprocessed or {}, nested.mean, mode)
    # the rule's one kind of values: thresholds, class weights or (QWK) cut points
    kind, tuned = next(((k, v) for k, v in (("cut_points", rule.cut_points),
                                            ("class_weights", rule.class_weights))
                        if v), ("thresholds", rule.thresholds))
    shown = [round(v, 4) for v in tuned[:_SHOWN]] + (["..."] if len(tuned) > _SHOWN else [])
    report["tuned"] = {kind: list(tuned)}
    log.info("%s: post-processing (%s): OOF %.5f at %s -> %.5f with tuned %s %s; nested CV "
             "%.5f with, %.5f without -> %s (%s)", cfg.name, metric.name, rule.default_score,
             default_rule(task), rule.score,
             kind.replace("_", " "), shown,
             report["nested"]["mean"], report["nested_without"],
             "applied" if report["applied"] else "not applied", report["decision"])
    return (rule if report["applied"] else None), report


def save_postprocess(run_dir: Path, rule: PostProcess | None) -> None:
    """``<run_dir>/postprocess.json`` holds ``rule``; none when it is None, so a rule tuned
    on an older OOF never outlives it."""
    path = run_dir / POSTPROCESS_FILE
    if rule is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, rule.to_json())
