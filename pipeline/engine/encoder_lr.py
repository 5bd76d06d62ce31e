"""A pretrained transformer fine-tuned at a head's learning rate: said once at the start.

An encoder without an ``lr`` of its own trains at each stage's ``optimizer.lr``, 1e-3 by
default: a rate for a fresh head or an MLP. Pretrained transformers are fine-tuned at 1e-5 to
1e-4; at 1e-3 their pretrained weights are largely overwritten in the first updates. Measured
(Rotten Tomatoes snippets, 400 train rows, all-MiniLM-L6-v2, 2 folds x 2 epochs): held-out
ROC AUC 0.69 with the encoder at 5e-5, 0.56 with it at the default 1e-3 (one fold's CV below
chance). A valid recipe, so a warning, not a refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.engine.recipe import TrainConfig
    from pipeline.models.network import ModelConfig

# above this, a pretrained transformer's fine-tuning is more overwrite than adaptation
HIGHEST_FINE_TUNING_LR = 2e-4
_TRANSFORMERS = ("hf", "rows_text")  # the kinds that load a transformers folder's weights


def pretrained_lr_warnings(model: ModelConfig, train: TrainConfig) -> list[str]:
    """One note per pretrained transformer encoder without its own ``lr`` that some stage
    trains above :data:`HIGHEST_FINE_TUNING_LR`."""
    highest = max((s.optimizer.lr, train.stage_key(i))
                  for i, s in enumerate(train.resolved_stages))
    if highest[0] <= HIGHEST_FINE_TUNING_LR:
        return []
    notes = []
    for i, enc in enumerate(model.encoders):
        kind, _, folder = enc.name.partition(":")
        loads_weights = kind in _TRANSFORMERS and folder and enc.pretrained is not False
        if loads_weights and enc.lr is None:
            notes.append(
                f"'model.encoders.{i}' ({enc.name}) has no 'lr' of its own, so it is fine-tuned "
                f"at '{highest[1]}.optimizer.lr' {highest[0]:g}: a pretrained transformer is "
                "fine-tuned at 1e-5 to 1e-4, and at a head's rate its pretrained weights are "
                f"largely overwritten; set 'model.encoders.{i}.lr' (e.g. 5.0e-5; the head "
                "keeps the optimizer's)")
    return notes
