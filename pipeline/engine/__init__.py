"""The training engine: one loop (:class:`Trainer`) with callback hooks, the recipe that
plans its stages, optimizers and schedules, losses, and the tricks as callbacks."""

from __future__ import annotations

from pipeline.engine.accelerator import build_accelerator
from pipeline.engine.plan import FitHistory, StagePlan, apply_freeze
from pipeline.engine.recipe import Stage, StageConfig, TrainConfig
from pipeline.engine.state import seed_everything
from pipeline.engine.trainer import Callback, Trainer

__all__ = [
    "Callback",
    "FitHistory",
    "Stage",
    "StageConfig",
    "StagePlan",
    "TrainConfig",
    "Trainer",
    "apply_freeze",
    "build_accelerator",
    "seed_everything",
]
