"""Pretraining objectives: encoders trained without the target on every available row.

Each objective is one module with its config section beside it, registered in
:data:`OBJECTIVES`; importing this package registers them all.
"""

from __future__ import annotations

from pipeline.pretrain import (
    electra,
    masked_image,
    masked_lm,
    simclr,
    skipgram,
    tabular_dae,
    tabular_vae,
)
from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData, fit_epochs

__all__ = ["OBJECTIVES", "Objective", "PretrainData", "electra", "fit_epochs", "masked_image",
           "masked_lm", "simclr", "skipgram", "tabular_dae", "tabular_vae"]
