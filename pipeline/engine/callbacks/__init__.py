"""Training tricks as callbacks of the engine's loop, each beside its config: weight averaging
and early stopping, adversarial training, consistency regularization."""

from __future__ import annotations

from pipeline.engine.callbacks.adversarial import ADVERSARIAL, AdversarialConfig
from pipeline.engine.callbacks.averaging import (
    EMA,
    SWA,
    EarlyStopping,
    EarlyStoppingConfig,
    EMAConfig,
    Snapshots,
    SWAConfig,
)
from pipeline.engine.callbacks.consistency import CONSISTENCY, ConsistencyConfig

__all__ = [
    "ADVERSARIAL",
    "CONSISTENCY",
    "EMA",
    "SWA",
    "AdversarialConfig",
    "ConsistencyConfig",
    "EMAConfig",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "SWAConfig",
    "Snapshots",
]
