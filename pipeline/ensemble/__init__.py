"""Ensembling: blenders that combine the OOF and test predictions of many runs into one,
their nested CV, metric-aware post-processing and the diversity report of the members.

Every blender follows the scikit-learn estimator contract (hyperparameters in ``__init__``,
``fit(preds, y, folds) -> self``, ``predict(preds)``, learned state in ``*_`` attributes)
and is registered in ``BLENDERS`` under its config name: ``mean``, ``optuna``,
``hill_climb``, ``rank``, ``power``, ``stacking``.
"""

from __future__ import annotations

from pipeline.ensemble._averaging import MeanBlender, PowerBlender, RankBlender
from pipeline.ensemble._base import (
    BLENDERS,
    Blender,
    WeightedBlender,
    build_blender,
    infer_task,
    stack_members,
)
from pipeline.ensemble._diversity import diversity_report, format_report
from pipeline.ensemble._hill_climb import HillClimbBlender
from pipeline.ensemble._nested_cv import NestedCV, nested_cv
from pipeline.ensemble._optuna import OptunaBlender
from pipeline.ensemble._postprocess import (
    POSTPROCESS_FILE,
    PostProcess,
    fit_postprocess,
    load_postprocess,
)
from pipeline.ensemble._stacking import StackingBlender

__all__ = [
    "BLENDERS",
    "POSTPROCESS_FILE",
    "Blender",
    "HillClimbBlender",
    "MeanBlender",
    "NestedCV",
    "OptunaBlender",
    "PostProcess",
    "PowerBlender",
    "RankBlender",
    "StackingBlender",
    "WeightedBlender",
    "build_blender",
    "diversity_report",
    "fit_postprocess",
    "format_report",
    "infer_task",
    "load_postprocess",
    "nested_cv",
    "stack_members",
]
